import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import type { TestContext } from "node:test";
import { connect, credsAuthenticator, type Authenticator, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { startNatsServer, type RunningNatsServer } from "../host/natsServer.ts";
import { natsConnectOptions } from "../host/configFile.ts";
import { Authority } from "../auth/authority.ts";
import type { Role } from "../auth/permissions.ts";

// A real nats-server with JetStream for one test suite: random loopback port, temporary store,
// stopped and deleted after the suite.

export type TestNats = RunningNatsServer & {
  /** Connected as the operator (`admin`) when the server has authentication. */
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  dir: string;
  /** Set when started with `auth: true`: the identities the server trusts. */
  auth?: TestAuth;
};

export type TestAuth = {
  authority: Authority;
  /** Connection options of a component (its credentials), to spread into `connect()` or a Host's options. */
  options(role: Role): { authenticator: Authenticator };
  /** The credentials file of a component. */
  credsFile(role: Role): string;
  /** Connects as a component or as an agent whose credentials expire at `expiresAt` (default: in an hour). */
  connect(who: Role | { agent: string; expiresAt?: Date }, extra?: Partial<ConnectionOptions>): Promise<NatsConnection>;
};

/** The credentials file's authenticator, as every CLI reads one (host/configFile.ts). */
const credsOf = (file: string): Authenticator => natsConnectOptions({ creds: file }).authenticator!;

async function testAuth(dir: string, url: () => string, track: (nc: NatsConnection) => void): Promise<TestAuth> {
  const authority = await Authority.open(join(dir, "auth"), { create: true });
  return {
    authority,
    options: (role) => ({ authenticator: credsOf(authority.credsFile(role)) }),
    credsFile: (role) => authority.credsFile(role),
    async connect(who, extra = {}) {
      let opts: Partial<ConnectionOptions>;
      if (typeof who === "string") opts = { authenticator: credsOf(authority.credsFile(who)), name: who };
      else {
        const c = await authority.agentCredentials(who.agent, who.expiresAt ?? new Date(Date.now() + 3600_000));
        opts = { authenticator: credsAuthenticator(new TextEncoder().encode(c.creds)), inboxPrefix: c.inboxPrefix, name: `agent ${who.agent}` };
      }
      const nc = await connect({ servers: url(), ...opts, ...extra });
      track(nc);
      return nc;
    },
  };
}

type Hooks = Pick<TestContext, "after"> | { after: (fn: () => Promise<void>) => void };

/** `config` is extra nats-server configuration text (e.g. `max_payload: 8388608`). */
/**
 * `config` is extra nats-server configuration text (e.g. `max_payload: 8388608`). `auth: true`
 * runs the server with the project's JWT authentication (auth/authority.ts), keys in the suite's
 * temporary folder; `nc` is then the operator's connection and `auth` connects the others.
 */
export async function startTestNats(t: Hooks, opts: { args?: string[]; config?: string; auth?: boolean } = {}): Promise<TestNats> {
  const dir = mkdtempSync(join(tmpdir(), "syntropism-nats-"));
  const args = [...(opts.args ?? [])];
  const opened: NatsConnection[] = [];
  let url = "";
  const auth = opts.auth ? await testAuth(dir, () => url, (c) => opened.push(c)) : undefined;
  const config = [auth ? `include ${JSON.stringify(relative(dir, auth.authority.serverConfigFile()))}` : "", opts.config ?? ""].filter(Boolean).join("\n");
  if (config) {
    writeFileSync(join(dir, "server.conf"), `${config}\n`);
    args.push("-c", join(dir, "server.conf"));
  }
  const server = await startNatsServer({ storeDir: join(dir, "js"), portsDir: dir, httpPort: -1, args });
  url = server.url;
  const nc = await connect({ servers: server.url, ...(auth ? auth.options("admin") : {}) });
  t.after(async () => {
    for (const c of opened) await c.close().catch(() => {});
    await nc.close().catch(() => {});
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { ...server, nc, js: jetstream(nc), jsm: await jetstreamManager(nc), dir, ...(auth ? { auth } : {}) };
}

/**
 * Collects cleanups registered while a suite's `before` hook runs and runs them (last first) in
 * the suite's `after` hook: `const scope = suiteScope(after)` at describe level.
 */
export function suiteScope(after: (fn: () => Promise<void>) => void): { after: (fn: () => Promise<void>) => void } {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch((err) => console.error("cleanup failed:", err));
  });
  return { after: (fn) => void cleanups.push(fn) };
}

/**
 * A nats-server that a fault test can kill -9, restart on the same port and store, or freeze
 * (SIGSTOP) and thaw. `nc`/`js`/`jsm` reconnect by themselves across restarts.
 */
export type RestartableNats = TestNats & {
  /** SIGKILL, and wait for the process to be gone. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and store (after kill or stop). */
  restart(): Promise<void>;
  /** SIGSTOP: the process keeps its sockets but answers nothing. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  /** The current server process's output (for failure dumps). */
  output(): string;
};

export async function startRestartableNats(t: Hooks, opts: { args?: string[]; auth?: boolean } = {}): Promise<RestartableNats> {
  const dir = mkdtempSync(join(tmpdir(), "syntropism-nats-"));
  const opened: NatsConnection[] = [];
  let url = "";
  const auth = opts.auth ? await testAuth(dir, () => url, (c) => opened.push(c)) : undefined;
  const args = [...(opts.args ?? []), ...(auth ? ["-c", auth.authority.serverConfigFile()] : [])];
  const start = (port: number) => startNatsServer({ storeDir: join(dir, "js"), portsDir: dir, port, args });
  let server = await start(-1);
  const port = server.port;
  url = server.url;
  const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 250, ...(auth ? auth.options("admin") : {}) });
  t.after(async () => {
    for (const c of opened) await c.close().catch(() => {});
    await nc.close().catch(() => {});
    server.process.kill("SIGCONT");
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const gone = async () => {
    if (server.process.exitCode !== null || server.process.signalCode !== null) return;
    const exited = new Promise<void>((r) => server.process.once("exit", () => r()));
    server.process.kill("SIGKILL");
    await exited;
  };
  return {
    ...server,
    nc,
    js: jetstream(nc),
    jsm: await jetstreamManager(nc),
    dir,
    ...(auth ? { auth } : {}),
    kill: gone,
    async restart() {
      await gone();
      // the port was just released; another start may briefly find it in TIME_WAIT
      for (let i = 0; ; i++) {
        try {
          server = await start(port);
          return;
        } catch (err) {
          if (i >= 20) throw err;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    },
    freeze: () => void server.process.kill("SIGSTOP"),
    thaw: () => void server.process.kill("SIGCONT"),
    output: () => server.output(),
    stop: async () => {
      server.process.kill("SIGCONT");
      await server.stop();
    },
  };
}
