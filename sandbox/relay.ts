import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { SandboxError, SandboxErrorCode } from "./errors.ts";

// The host half of the NATS relay. Containers have no network at all (`--network none`); the one
// way out is a Unix socket in a folder bind-mounted read-only at /run/nats, which this server
// listens on and pipes, connection by connection, to the NATS server's TCP port. The container's
// launcher (agent/launcher.mjs) is the inner half (127.0.0.1:4222 → /run/nats/nats.sock). What
// passes is NATS protocol only to this one address, and the server's own authentication decides
// what each agent may do with it (docs/security.md).

export const RELAY_SOCKET = "nats.sock";

export type NatsRelay = {
  /** The folder to bind-mount at /run/nats (holds RELAY_SOCKET). */
  dir: string;
  target: { host: string; port: number };
  /** Connections open now. */
  connections(): number;
  close(): Promise<void>;
};

/** host and port of the first server of a NATS URL (nats://h:p, comma-separated list allowed). */
export function natsTarget(natsUrl: string): { host: string; port: number } {
  const first = natsUrl.split(",")[0]!.trim();
  let u: URL;
  try {
    u = new URL(first);
  } catch {
    throw new SandboxError(SandboxErrorCode.InvalidSpec, `natsUrl ${JSON.stringify(natsUrl)} is not a URL`);
  }
  if (u.protocol !== "nats:") throw new SandboxError(SandboxErrorCode.InvalidSpec, `natsUrl ${first}: the relay forwards plain nats:// only`);
  return { host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port ? Number(u.port) : 4222 };
}

/**
 * Listens on `<dir>/nats.sock` (mode 0666: the containers' user is 65534; the folder 0755) and pipes
 * each connection to `natsUrl`. A stale socket from a crashed run is replaced.
 */
export async function startRelay(dir: string, natsUrl: string): Promise<NatsRelay> {
  const target = natsTarget(natsUrl);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  const path = join(dir, RELAY_SOCKET);
  rmSync(path, { force: true });
  const open = new Set<Socket>();
  const server: Server = createServer((inner) => {
    const outer = createConnection(target);
    open.add(inner);
    inner.pipe(outer);
    outer.pipe(inner);
    const done = () => {
      open.delete(inner);
      inner.destroy();
      outer.destroy();
    };
    inner.on("error", done).on("close", done);
    outer.on("error", done).on("close", done);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new SandboxError(SandboxErrorCode.Relay, `NATS relay cannot listen on ${path}: ${err.message}`, { cause: err })));
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o666);
  return {
    dir,
    target,
    connections: () => open.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
