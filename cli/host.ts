import { existsSync, watch, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadSettings, type Settings } from "../config/settings.ts";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { HostConfig } from "../host/config.ts";
import { AUTH_DIR, describeNats, explainConnectError, loadConfigFile, natsConnectOptions, NATS_URL_FILE, DEFAULT_NATS_URL, resolveNats, serversOf, type NatsRole, type ResolvedNats } from "../host/configFile.ts";
import { Authority } from "../auth/authority.ts";
import { windowCredentialsExpiry } from "../auth/resource.ts";
import { getDeadLetter, listDeadLetters, purgeDeadLetters, replayDeadLetter, type DeadLetter } from "../host/deadLetter.ts";
import { auditVerifyCommand, DEFAULT_AUDIT_STREAM } from "../host/audit.ts";
import { coerceError, ErrorCode, HostError, UsageError } from "../host/errors.ts";
import { createLogger, type Logger } from "../host/log.ts";
import { ensureNatsServer, isPortFree, startNatsServer, type RunningNatsServer } from "../host/natsServer.ts";
import { Host } from "../host/runtime.ts";
import { discoverFunctions } from "../host/loader.ts";
import { applyPlan, formatPlan, planStreams } from "../host/streams.ts";
import { Supervisor } from "../host/supervisor.ts";
import { startTracing } from "../otel/tracing.ts";
import { otlpTracesUrl, TraceBridge } from "../otel/bridge.ts";
import { installProcessPolicy } from "../host/processPolicy.ts";
import { collectStatus, formatStatus, healthOf, table } from "../host/status.ts";

// `host` — run functions and look after the streams they use. `host help` lists the commands.
// The command line lives outside host/ (the embeddable library): it starts tracing from otel/,
// which depends on host/, never the other way round.

const USAGE = `Usage: host <command> [options]

Run functions
  start [--workers N] [--apply]      run functions/ in N supervised worker processes (default 1)
  dev [--no-auth]                    local stack: nats-server (unless NATS_URL) with authentication
                                     (identities in .data/auth), streams applied, functions
                                     hot-reloaded when files change; --no-auth for experiments only

Identities (decentralized JWT; docs/security.md)
  auth init                          create .data/auth (operator, accounts, component credentials)
  auth agent ID [--ttl MS] [--out F] credentials for agent ID, valid for MS (default: to the end of
                                     the current window + 30 s); printed, or written to F (0600)
  auth revoke ID...                  revoke every credential of these agents on the running server

Streams and buckets (streams.config.ts)
  streams plan                       show how the server differs from the config (exit 2 on drift)
  streams apply                      create or update streams and KV buckets to match; idempotent

Dead letters
  dlq ls [--fn ID] [--limit N]       list dead letters (newest last)
  dlq show SEQ                       one dead letter: reason, error, headers, payload
  dlq replay SEQ... | --all [--fn ID] [--keep]
                                     publish back to the original subject; removed unless --keep
  dlq purge [--fn ID] --force        delete dead letters

Audit
  audit verify [--stream NAME] [--subject FILTER]
                                     recompute every event's envelope hash (default stream AUDIT);
                                     lists each bad one, exit 3 if any

Seeing it
  status [--interval MS]             per function: state, pending, ack pending, redelivered, dead
                                     letters, throughput and latency from every running worker
  health                             ok (exit 0), or degraded / down (exit 1) with each failing
                                     function's error: for probes and scripts
  trace-bridge                       forward spans published on trace.> to OTEL_EXPORTER_OTLP_ENDPOINT

Common options
  --functions DIR   function folder (default functions)
  --config FILE     streams config (default streams.config.ts)
  --json            machine-readable output (ls, show, status, plan, audit verify)
  --grace MS        shutdown grace period for in-flight handlers (default 10000)

Environment: NATS_URL (unset: the server \`npm start\` wrote to .data/nats.url if it answers, else
nats://127.0.0.1:4222; every command says which on stderr), NATS_CREDS (credentials file; unset:
the command's own in .data/auth for the server \`npm start\` runs), LOG_LEVEL (debug|info|warn|error),
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_TRACES_EXPORTER / OTEL_SERVICE_NAME (tracing; off when unset).
`;

const OPTIONS = {
  workers: { type: "string" },
  apply: { type: "boolean" },
  functions: { type: "string" },
  config: { type: "string" },
  json: { type: "boolean" },
  grace: { type: "string" },
  fn: { type: "string" },
  limit: { type: "string" },
  all: { type: "boolean" },
  keep: { type: "boolean" },
  force: { type: "boolean" },
  interval: { type: "string" },
  stream: { type: "string" },
  subject: { type: "string" },
  "no-auth": { type: "boolean" },
  ttl: { type: "string" },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Flags = ReturnType<typeof parse>["values"];

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
}

function intFlag(raw: string | undefined, name: string, fallback: number, min = 0): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got ${raw}`);
  return n;
}


/** The streams a command reads, so that "stream not found" can say which one and what to run. */
type StreamNeeds = { streams: string[]; config: string };

async function withJsm<T>(nats: ResolvedNats, fn: (nc: NatsConnection, jsm: JetStreamManager) => Promise<T>, needs?: StreamNeeds): Promise<T> {
  const nc = await connect({ servers: serversOf(nats.url), ...natsConnectOptions(nats), name: "syntropism-cli" }).catch((err) => {
    throw new HostError(ErrorCode.NatsUnreachable, explainConnectError(nats, err), { cause: err });
  });
  try {
    const jsm = await jetstreamManager(nc);
    try {
      return await fn(nc, jsm);
    } catch (err) {
      if (needs && isStreamNotFound(err)) {
        throw new HostError(ErrorCode.StreamMissing, missingStreamsMessage(await missingStreams(jsm, needs.streams), nats, needs.config), { cause: err });
      }
      throw err;
    }
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

/** A JetStream "stream not found", possibly wrapped (as `audit verify` does) in an error's cause. */
function isStreamNotFound(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound) return true;
  }
  return false;
}

async function missingStreams(jsm: JetStreamManager, wanted: string[]): Promise<string[]> {
  const have = new Set<string>();
  for await (const name of jsm.streams.names()) have.add(name);
  return wanted.filter((name) => !have.has(name));
}

function missingStreamsMessage(missing: string[], nats: ResolvedNats, config: string): string {
  const what = missing.length === 0 ? "a stream this command reads" : `${missing.length === 1 ? "stream" : "streams"} ${missing.join(", ")}`;
  const projectConfig = resolve(config) === resolve("streams.config.ts");
  const apply = `npm run host -- streams apply${projectConfig ? "" : ` --config ${config}`}`;
  const them = missing.length > 1 ? "them" : "it";
  return (
    `${what} ${missing.length > 1 ? "do" : "does"} not exist on ${describeNats(nats).slice("nats: ".length)}. ` +
    `Create ${them} with \`${apply}\`` +
    (projectConfig ? ", or start the stack with `npm start` (it applies streams.config.ts)" : "") +
    (nats.source === "NATS_URL" ? "" : `, or set NATS_URL to the server that has ${them}`)
  );
}

/** The streams a command over `config` may read: the declared ones and the dead-letter stream. */
function configStreams(config: HostConfig, path: string): StreamNeeds {
  return { streams: [...config.streams.map((s) => s.name), config.deadLetter.stream], config: path };
}

const out = (s: string) => process.stdout.write(`${s}\n`);

/** `settings`: the caller's (economy/dev.ts passes its database); default the environment's, validated here. */
export async function main(argv: string[], options: { settings?: Settings } = {}): Promise<number> {
  const { values: flags, positionals } = parse(argv);
  const [command, sub, ...rest] = positionals;
  if (flags.help || !command || command === "help") {
    out(USAGE);
    return command || flags.help ? 0 : 1;
  }
  const settings = options.settings ?? loadSettings();
  const log = createLogger({ level: settings.log.level, bindings: { service: "host" } });
  // each command that talks to NATS resolves the server once and says on stderr which it is;
  // start and trace-bridge as a log line (everything `host start` prints is one JSON object a line)
  const resolveServer = async (): Promise<ResolvedNats> => {
    // workers and the process that supervises them are the service; everything else an operator
    const role: NatsRole = command === "start" || command === "trace-bridge" ? "service" : "admin";
    const nats = await resolveNats({ role });
    if (command === "start" || command === "trace-bridge") log.info({ nats: nats.url, source: nats.source, ...(nats.note ? { note: nats.note } : {}) }, describeNats(nats));
    else process.stderr.write(`${describeNats(nats)}\n`);
    return nats;
  };
  switch (command) {
    case "start":
      return start(flags, log, await resolveServer(), settings);
    case "worker":
      return worker(flags, log, settings);
    case "dev":
      return dev(flags, log, settings);
    case "streams":
      return streams(sub, flags, await resolveServer());
    case "dlq":
      return dlq(sub, rest, flags, await resolveServer());
    case "status":
      return status(flags, await resolveServer());
    case "health":
      return health(flags, await resolveServer());
    case "audit":
      if (sub !== "verify") throw new UsageError("audit needs verify");
      return withJsm(await resolveServer(), (_nc, jsm) => auditVerifyCommand(jsm.jetstream(), { stream: flags.stream, subject: flags.subject, json: flags.json }, out), {
        streams: [flags.stream ?? DEFAULT_AUDIT_STREAM],
        config: configPath(flags),
      });
    case "trace-bridge":
      return traceBridge(log, await resolveServer());
    case "auth":
      return auth(sub, rest, flags, settings, resolveServer);
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function configPath(flags: Flags): string {
  return flags.config ?? "streams.config.ts";
}

function functionsDir(flags: Flags): string {
  return resolve(flags.functions ?? "functions");
}

// ---------------------------------------------------------------------------------------- start

async function start(flags: Flags, log: Logger, nats: ResolvedNats, settings: Settings): Promise<number> {
  const workers = intFlag(flags.workers ?? String(settings.host.workers), "workers", 1, 1);
  const grace = intFlag(flags.grace, "grace", 10_000);
  const config = await loadConfigFile(configPath(flags));
  // plan (and apply) once here, so N workers do not race to create the same streams
  await withJsm(nats, async (nc, jsm) => {
    const plan = await planStreams(jsm, config);
    if (!plan.drift) return;
    if (!flags.apply) {
      throw new HostError("HOST_ERR_STREAM_DRIFT", `the server's streams differ from ${configPath(flags)}:\n${formatPlan(plan)}\nRun \`host streams apply\`, or start with --apply.`);
    }
    for (const line of await applyPlan(nc, jsm, plan)) log.info({}, line);
  });
  const args = ["worker", "--functions", functionsDir(flags), "--config", configPath(flags), "--grace", String(grace)];
  // the workers get the server resolved here (it may have come from .data/nats.url) as their NATS_URL
  const supervisor = new Supervisor({ workers, module: fileURLToPath(import.meta.url), args, log, stopTimeoutMs: grace + 10_000, env: { NATS_URL: nats.url, ...(nats.creds ? { NATS_CREDS: nats.creds } : {}) } });
  let stopping: Promise<void> | undefined;
  const done = new Promise<number>((resolveExit) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) return;
      log.info({ signal }, "stopping workers");
      stopping = supervisor.stop().then(() => resolveExit(0));
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
  try {
    await supervisor.start();
  } catch (err) {
    log.error({ err: coerceError(err) }, "start-up failed");
    return 1;
  }
  log.info({ workers, pids: supervisor.pids, nats: nats.url }, "all workers ready");
  return done;
}

/** One worker process (forked by `start`). */
async function worker(flags: Flags, log: Logger, settings: Settings): Promise<number> {
  const index = settings.host.workerIndex ?? "0";
  const wlog = log.child({ worker: Number(index) });
  const config = await loadConfigFile(configPath(flags));
  const tracing = await startTracing({ serviceName: config.service.name });
  let stop: (why: string, code?: number) => void = () => {};
  const host = new Host({
    // the server `host start` resolved and its credentials, handed down as NATS_URL and NATS_CREDS
    servers: serversOf(settings.nats.url ?? DEFAULT_NATS_URL),
    ...natsConnectOptions({ creds: settings.nats.creds }),
    functionsDir: functionsDir(flags),
    config,
    settings,
    onDrift: "refuse",
    graceMs: intFlag(flags.grace, "grace", 10_000),
    log: wlog,
    name: `syntropism-worker-${index}`,
    onConnectionClosed: (err) => {
      wlog.error({ err }, "the NATS connection closed for good; exiting so that the supervisor starts a fresh worker");
      stop("connection closed", 1);
    },
  });
  const stopped = new Promise<number>((resolveExit) => {
    let stopping = false;
    stop = (why: string, code = 0) => {
      if (stopping) return;
      stopping = true;
      wlog.info({ why }, "stopping");
      host.stop().then(tracing.shutdown).then(
        () => resolveExit(code),
        (err) => {
          wlog.error({ err: coerceError(err) }, "stop failed");
          resolveExit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    installProcessPolicy(wlog, { onFatal: () => stop("uncaught exception", 1), classifyError: config.classifyError });
    // the supervisor went away: nobody will restart us or forward signals, so stop cleanly
    process.on("disconnect", () => stop("supervisor gone"));
  });
  try {
    await host.start();
  } catch (err) {
    wlog.error({ err: coerceError(err) }, "worker failed to start");
    await host.stop().catch(() => {});
    await tracing.shutdown();
    return 1;
  }
  process.send?.({ type: "ready", pid: process.pid });
  return stopped;
}

// ------------------------------------------------------------------------------------------ dev

async function dev(flags: Flags, log: Logger, settings: Settings): Promise<number> {
  let stopping = false;
  let server: RunningNatsServer | undefined;
  let url = settings.nats.url;
  // the other CLIs find the local server through this file; it goes when the server does
  const urlFile = resolve(NATS_URL_FILE);
  const stopServer = async () => {
    if (!server) return;
    await server.stop();
    rmSync(urlFile, { force: true });
    log.info({ pid: server.pid }, "local nats-server stopped");
  };
  // the local server's identities: created once in .data/auth, checked on every start
  let authority: Authority | undefined;
  let creds = settings.nats.creds;
  if (!url) {
    const binary = ensureNatsServer((m) => log.info({}, m));
    const dataDir = resolve(".data/nats");
    mkdirSync(dataDir, { recursive: true });
    const args: string[] = [];
    if (flags["no-auth"]) {
      log.warn({}, "AUTHENTICATION IS OFF (--no-auth): any client of this nats-server can mint credits (admin.genesis), act as any agent and delete the audit stream. For experiments only; never expose this server.");
    } else {
      authority = await Authority.open(AUTH_DIR, { create: true });
      args.push("-c", authority.serverConfigFile());
      creds = authority.credsFile("service");
      // JetStream keeps each account's streams apart: those of a run without authentication are
      // in the global account ($G), which this server does not serve
      if (existsSync(join(dataDir, "jetstream", "$G", "streams"))) log.warn({ dir: join(dataDir, "jetstream", "$G") }, "streams from a run without authentication are not visible with authentication on (they belong to the global account); the streams are created afresh. Delete that folder to reclaim its space, or run with --no-auth to see them");
    }
    const port = (await isPortFree(4222)) ? 4222 : -1;
    const httpPort = (await isPortFree(8222)) ? 8222 : -1;
    server = await startNatsServer({ binary, storeDir: dataDir, portsDir: resolve(".data/run"), port, httpPort, serverName: "syntropism-dev", ownProcessGroup: true, args });
    url = server.url;
    writeFileSync(urlFile, `${url}\n`);
    if (port === -1) log.warn({ port: server.port }, "port 4222 is taken; the local nats-server uses another");
  }
  const config = await loadConfigFile(configPath(flags));
  const tracing = await startTracing({ serviceName: config.service.name });
  const dir = functionsDir(flags);
  settings = { ...settings, nats: { ...settings.nats, url, ...(creds ? { creds } : {}) } };
  const host = new Host({ servers: url, ...natsConnectOptions({ creds }), functionsDir: dir, config, settings, onDrift: "apply", graceMs: intFlag(flags.grace, "grace", 10_000), log, name: "syntropism-dev" });
  try {
    await host.start();
  } catch (err) {
    await host.stop().catch(() => {});
    await stopServer();
    throw err;
  }

  // hot reload: file events are debounced, and a slow poll catches what events miss
  let timer: NodeJS.Timeout | undefined;
  let reloading = Promise.resolve();
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      reloading = reloading.then(() => host.reload().then(() => undefined));
    }, 100);
  };
  mkdirSync(dir, { recursive: true });
  const watcher = watch(dir, { recursive: true }, schedule);
  const poll = setInterval(schedule, 2000);
  const shared = watchSharedModules(dir, log);

  process.stdout.write(
    [
      "",
      "Syntropism dev stack",
      `  NATS          ${url}${server ? "  (local nats-server, data in .data/nats)" : ""}`,
      ...(server?.monitorUrl ? [`  monitoring    ${server.monitorUrl}`] : []),
      `  functions     ${dir}  (${host.functions.length} loaded; function edits reload without a restart, edits of modules they import need one)`,
      "",
      ...(authority ? [`  credentials   ${relative(process.cwd(), authority.credsFile("admin"))}  (operator; agents get their own: npm run host -- auth agent ID)`] : server ? ["  credentials   none: AUTHENTICATION IS OFF (--no-auth)"] : []),
      "",
      `  try:  nats --server ${url}${authority ? ` --creds ${relative(process.cwd(), authority.credsFile("admin"))}` : ""} micro ls`,
      `        npm run host -- status        ${server ? `(from this folder: the CLIs find this server through ${NATS_URL_FILE}${authority ? ` and their credentials in ${AUTH_DIR}` : ""})` : `(with NATS_URL=${url})`}`,
      "  Ctrl-C stops everything.",
      "",
    ].join("\n") + "\n",
  );

  return new Promise<number>((resolveExit) => {
    const stop = async (code: number) => {
      if (stopping) return;
      stopping = true;
      watcher.close();
      shared.close();
      clearInterval(poll);
      clearTimeout(timer);
      await reloading;
      await host.stop();
      await tracing.shutdown();
      await stopServer();
      resolveExit(code);
    };
    process.on("SIGINT", () => void stop(0));
    process.on("SIGTERM", () => void stop(0));
    // Ctrl-C does not reach the local server (its own process group, see spawnLocalServer): it stops
    // after the functions. Signalled or clean by someone else, it ends the stack quietly; anything
    // else is a crash, and the stack stops with its last output
    const local = server;
    local?.process.once("exit", (code, signal) => {
      if (stopping) return;
      const crashed = !(code === 0 || signal === "SIGINT" || signal === "SIGTERM");
      if (crashed) log.error({ code, output: local.output().slice(-2000) }, "the local nats-server exited; stopping");
      void stop(crashed ? 1 : 0);
    });
  });
}

/**
 * Modules outside the functions folder (economy/*.ts, …) load once per process: `host dev` reloads
 * a function file, not what it imports. Rather than run an edit of one silently without it, say
 * which file changed and that it needs a restart. Watched: the top-level folders (beside the
 * functions folder) that function files import from, and the host's own folder.
 */
function watchSharedModules(functionsDir: string, log: Logger): { close(): void } {
  const root = dirname(functionsDir);
  const folders = new Set<string>([dirname(fileURLToPath(import.meta.resolve("../host/mod.ts")))]);
  for (const f of discoverFunctions(functionsDir)) {
    for (const m of readFileSync(f.file, "utf8").matchAll(/from\s+"(\.{1,2}\/[^"]+)"/g)) {
      const target = resolve(dirname(f.file), m[1]!);
      const rel = relative(root, target);
      if (rel.startsWith("..") || target.startsWith(functionsDir + sep)) continue;
      const top = rel.split(sep)[0]!;
      if (top && top !== rel) folders.add(join(root, top));
    }
  }
  const last = new Map<string, number>();
  const watchers = [...folders].filter((d) => existsSync(d)).map((d) =>
    watch(d, { recursive: true }, (_event, name) => {
      if (!name || !/\.(ts|mts|js|mjs)$/.test(String(name))) return;
      const file = relative(root, join(d, String(name)));
      const now = Date.now();
      if (now - (last.get(file) ?? 0) < 1000) return; // one line per save
      last.set(file, now);
      log.warn({ file }, `${file} changed: modules outside ${relative(root, functionsDir) || functionsDir}/ load once per process, so this edit takes effect after a restart (Ctrl-C, then npm start again); edits of function files reload by themselves`);
    }),
  );
  return { close: () => watchers.forEach((w) => w.close()) };
}

// ----------------------------------------------------------------------------------------- auth

async function auth(sub: string | undefined, ids: string[], flags: Flags, settings: Settings, resolveServer: () => Promise<ResolvedNats>): Promise<number> {
  if (sub === "init") {
    const authority = await Authority.open(AUTH_DIR, { create: true });
    out(`${relative(process.cwd(), authority.dir)}: operator ${authority.manifest.operator}, account ${authority.accountPublicKey}`);
    return 0;
  }
  const authority = await Authority.open(AUTH_DIR);
  if (sub === "agent") {
    if (ids.length !== 1) throw new UsageError("auth agent needs one agent id");
    const windowMs = settings.economy.windowMs;
    const expiresAt = flags.ttl !== undefined ? new Date(Date.now() + intFlag(flags.ttl, "ttl", 0, 1000)) : windowCredentialsExpiry(Math.floor(Date.now() / windowMs), windowMs);
    const c = await authority.agentCredentials(ids[0]!, expiresAt);
    if (flags.out) {
      writeFileSync(flags.out, c.creds, { mode: 0o600 });
      process.stderr.write(`${flags.out}: agent ${c.agentId} (${c.publicKey}), valid until ${c.expiresAt.toISOString()}, inbox prefix ${c.inboxPrefix}\n`);
    } else process.stdout.write(c.creds);
    return 0;
  }
  if (sub === "revoke") {
    if (!ids.length) throw new UsageError("auth revoke needs agent ids");
    const nats = await resolveServer();
    const added = await authority.revokeAgents(serversOf(nats.url), ids);
    for (const id of ids) out(`${id}: ${added.includes(id) ? "revoked" : "already revoked"} (${authority.agentPublicKey(id)})`);
    return 0;
  }
  throw new UsageError("auth needs init, agent or revoke");
}

// -------------------------------------------------------------------------------------- streams

async function streams(sub: string | undefined, flags: Flags, nats: ResolvedNats): Promise<number> {
  const config = await loadConfigFile(configPath(flags));
  return withJsm(nats, async (nc, jsm) => {
    const plan = await planStreams(jsm, config);
    if (sub === "plan") {
      out(flags.json ? JSON.stringify(plan, null, 2) : formatPlan(plan));
      return plan.drift ? 2 : 0;
    }
    if (sub === "apply") {
      const done = await applyPlan(nc, jsm, plan);
      out(done.length ? done.join("\n") : "Nothing to do: the server matches streams.config.ts.");
      return 0;
    }
    throw new UsageError("streams needs plan or apply");
  });
}

// ------------------------------------------------------------------------------------------ dlq

function printable(data: Uint8Array, max = 2000): string {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(data.subarray(0, max));
  return data.length > max ? `${text}… (${data.length} bytes)` : text;
}

function dlqJson(dl: DeadLetter) {
  return { ...dl, data: printable(dl.data, 1 << 20) };
}

async function dlq(sub: string | undefined, args: string[], flags: Flags, nats: ResolvedNats): Promise<number> {
  const config: HostConfig = await loadConfigFile(configPath(flags));
  const { stream, subjectPrefix: prefix } = config.deadLetter;
  return withJsm(nats, async (nc, jsm) => {
    switch (sub) {
      case "ls": {
        const list = await listDeadLetters(jsm, stream, { fn: flags.fn, prefix, limit: intFlag(flags.limit, "limit", 100, 1) });
        if (flags.json) out(JSON.stringify(list.map(dlqJson), null, 2));
        else if (!list.length) out("No dead letters.");
        else {
          out(table(["SEQ", "TIME", "FUNCTION", "REASON", "ATTEMPTS", "SOURCE", "ERROR"], list.map((d) => [
            String(d.seq), d.time, d.fn, d.reason, String(d.attempts), `${d.stream ?? ""}:${d.sourceSeq ?? ""} ${d.subject}`, (d.error?.message ?? "").slice(0, 120),
          ])));
        }
        return 0;
      }
      case "show": {
        const seq = intFlag(args[0], "seq", NaN, 1);
        const dl = await getDeadLetter(jsm, stream, seq);
        if (!dl) {
          process.stderr.write(`no dead letter with sequence ${seq}\n`);
          return 1;
        }
        out(JSON.stringify(dlqJson(dl), null, 2));
        return 0;
      }
      case "replay": {
        const { jetstream } = await import("@nats-io/jetstream");
        const js = jetstream(nc);
        let targets: DeadLetter[];
        if (flags.all) targets = await listDeadLetters(jsm, stream, { fn: flags.fn, prefix, limit: Number.MAX_SAFE_INTEGER });
        else {
          if (!args.length) throw new UsageError("dlq replay needs sequences or --all");
          targets = [];
          for (const a of args) {
            const dl = await getDeadLetter(jsm, stream, intFlag(a, "seq", NaN, 1));
            if (!dl) throw new HostError(ErrorCode.DeadLetterNotFound, `no dead letter with sequence ${a}`);
            targets.push(dl);
          }
        }
        for (const dl of targets) {
          const seq = await replayDeadLetter(js, jsm, stream, dl, { keep: flags.keep });
          out(`replayed dead letter ${dl.seq} (${dl.fn}) to ${dl.subject} as ${dl.stream ?? "stream"} sequence ${seq}`);
        }
        if (!targets.length) out("No dead letters to replay.");
        return 0;
      }
      case "purge": {
        if (!flags.force) throw new UsageError("dlq purge deletes dead letters; add --force to confirm");
        const n = await purgeDeadLetters(jsm, stream, { fn: flags.fn, prefix });
        out(`purged ${n} dead letter(s)`);
        return 0;
      }
      default:
        throw new UsageError("dlq needs ls, show, replay or purge");
    }
  }, configStreams(config, configPath(flags)));
}

// --------------------------------------------------------------------------------- trace bridge

async function traceBridge(log: Logger, nats: ResolvedNats): Promise<number> {
  const url = otlpTracesUrl();
  if (!url) throw new UsageError("trace-bridge needs OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)");
  const nc = await connect({ servers: serversOf(nats.url), ...natsConnectOptions(nats), name: "syntropism-trace-bridge", maxReconnectAttempts: -1 }).catch((err) => {
    throw new HostError(ErrorCode.NatsUnreachable, explainConnectError(nats, err), { cause: err });
  });
  const bridge = new TraceBridge({ nc, url, log });
  bridge.start();
  await nc.flush();
  log.info({ url, subject: "trace.>" }, "trace bridge forwarding spans");
  return new Promise<number>((resolveExit) => {
    const stop = async () => {
      await bridge.stop();
      log.info(bridge.stats, "trace bridge stopped");
      await nc.drain().catch(() => nc.close());
      resolveExit(0);
    };
    process.once("SIGINT", () => void stop());
    process.once("SIGTERM", () => void stop());
  });
}

// --------------------------------------------------------------------------------------- status

/** status and health read around missing streams; this says on stderr which are missing, where. */
async function noteMissingStreams(jsm: JetStreamManager, nats: ResolvedNats, needs: StreamNeeds): Promise<void> {
  const missing = await missingStreams(jsm, needs.streams);
  if (missing.length) process.stderr.write(`host: ${missingStreamsMessage(missing, nats, needs.config)}\n`);
}

async function status(flags: Flags, nats: ResolvedNats): Promise<number> {
  const config = await loadConfigFile(configPath(flags));
  const interval = intFlag(flags.interval, "interval", 1000);
  const needs = configStreams(config, configPath(flags));
  return withJsm(nats, async (nc, jsm) => {
    const report = await collectStatus(nc, jsm, config, { intervalMs: interval });
    out(flags.json ? JSON.stringify(report, null, 2) : formatStatus(report));
    await noteMissingStreams(jsm, nats, needs);
    return 0;
  }, needs);
}

async function health(flags: Flags, nats: ResolvedNats): Promise<number> {
  const config = await loadConfigFile(configPath(flags));
  const needs = configStreams(config, configPath(flags));
  return withJsm(nats, async (nc, jsm) => {
    const h = healthOf(await collectStatus(nc, jsm, config, { intervalMs: 0 }));
    await noteMissingStreams(jsm, nats, needs);
    if (flags.json) out(JSON.stringify(h, null, 2));
    else {
      out(`${h.status} (${h.workers} worker(s) answering)`);
      for (const d of h.degraded) for (const p of d.problems) out(`  ${d.fn}  ${p}`);
    }
    return h.status === "ok" ? 0 : 1;
  }, needs);
}

// ---------------------------------------------------------------------------------------- entry

/** Runs the CLI and exits with its code; bin/host.mjs and `tsx cli/host.ts` both end here. */
export function run(argv: string[]): void {
  main(argv).then(
    (code) => process.exit(code),
    (err) => {
      if (err instanceof UsageError || String((err as { code?: string }).code).startsWith("ERR_PARSE_ARGS")) {
        process.stderr.write(`host: ${(err as Error).message}\n\n${USAGE}`);
        process.exit(64);
      }
      const e = coerceError(err) as Error & { code?: string };
      process.stderr.write(`host: ${e.code ? `${e.code}: ` : ""}${e.message}\n`);
      process.exit(1);
    },
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) run(process.argv.slice(2));
