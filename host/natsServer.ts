import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import { loadSettings } from "../config/settings.ts";
import { existsSync, mkdirSync, readFileSync, readdirSync, accessSync, constants } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ErrorCode, HostError } from "./errors.ts";

// Starts a real nats-server with JetStream: used by `host dev` for the local stack and by the test
// helpers. A port of -1 lets the server choose; the chosen ports are read from its ports file.

export type NatsServerOptions = {
  /** Client port; -1 picks a free one. Default -1. */
  port?: number;
  /** HTTP monitoring port; -1 picks a free one, undefined disables monitoring. */
  httpPort?: number;
  /** JetStream store directory (required: JetStream is always on). */
  storeDir: string;
  /** Where the ports file is written; defaults to storeDir. */
  portsDir?: string;
  host?: string;
  /** Extra command-line arguments. */
  args?: string[];
  /** Server name (cluster member names must differ). */
  serverName?: string;
  binary?: string;
  /** Away from the terminal's Ctrl-C, in a process group of its own (spawnLocalServer). Default false. */
  ownProcessGroup?: boolean;
};

export type RunningNatsServer = {
  url: string;
  port: number;
  monitorUrl?: string;
  pid: number;
  process: ChildProcess;
  /** Everything the server printed; kept for failure dumps. */
  output(): string;
  stop(): Promise<void>;
};

const WELL_KNOWN = ["/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server"];

/** NATS_SERVER_BIN when set (and then only it), else `nats-server` on PATH, else well-known paths. */
export function findNatsServer(explicit = loadSettings().host.natsServerBin): string | undefined {
  const candidates = explicit
    ? [explicit]
    : [...(process.env.PATH ?? "").split(delimiter).filter(Boolean).map((d) => join(d, "nats-server")), ...WELL_KNOWN];
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

export const INSTALL_HINT =
  "nats-server was not found. Install it with `sudo apt-get install -y nats-server` (Debian/Ubuntu), " +
  "or download a release from the NATS project and put `nats-server` on PATH, or set NATS_SERVER_BIN " +
  "to its path, or set NATS_URL to use a server that is already running.";

/**
 * Finds nats-server, installing Debian's package when running as root with apt-get available.
 * Throws HOST_ERR_NATS_SERVER_MISSING with exact instructions otherwise.
 */
export function ensureNatsServer(log: (msg: string) => void = () => {}): string {
  const explicit = loadSettings().host.natsServerBin;
  const found = findNatsServer(explicit);
  if (found) return found;
  if (explicit) throw new HostError(ErrorCode.NatsServerMissing, `NATS_SERVER_BIN=${explicit} is not an executable file. ${INSTALL_HINT}`);
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (isRoot && existsSync("/usr/bin/apt-get")) {
    log("nats-server not found; installing Debian's nats-server package with apt-get");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    let r = spawnSync("apt-get", ["install", "-y", "-q", "nats-server"], { stdio: "inherit", env });
    if (r.status !== 0) {
      spawnSync("apt-get", ["update", "-q"], { stdio: "inherit", env });
      r = spawnSync("apt-get", ["install", "-y", "-q", "nats-server"], { stdio: "inherit", env });
    }
    const after = findNatsServer();
    if (after) return after;
  }
  throw new HostError(ErrorCode.NatsServerMissing, INSTALL_HINT);
}

export function nextFreePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

export function isPortFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

let pdeathsig: boolean | undefined;
/** util-linux's `setpriv --pdeathsig` is there (Linux); probed once. */
function hasPdeathsig(): boolean {
  if (pdeathsig === undefined) {
    const r = process.platform === "linux" ? spawnSync("setpriv", ["--help"], { encoding: "utf8" }) : undefined;
    pdeathsig = r?.status === 0 && r.stdout.includes("--pdeathsig");
  }
  return pdeathsig;
}

/**
 * Spawns a local server (nats-server here, PostgreSQL in economy/embeddedPostgres.ts), tied to this
 * process's lifetime: on Linux, `setpriv --pdeathsig SIG` has the kernel send it `deathSignal` when
 * this process dies, however it dies (even by SIGKILL, when no exit hook runs); setpriv execs the
 * server, so the child's pid is the server's. Callers also stop it from a process "exit" hook,
 * which is all there is where setpriv is missing.
 *
 * `ownProcessGroup` (what `npm start` and `host dev` ask for): the server runs in a process group
 * of its own (`detached`). Ctrl-C in a terminal sends SIGINT to the whole foreground group; a server
 * that got it too would shut down under the functions still using it, and they would log errors.
 * Out of the group, only the process that started it stops it, after its functions. Only there:
 * `detached` also starts a new session, and with the kernel's scheduler autogroups (on by default)
 * each session gets an equal share of the CPU — a server in its own session would be favoured over
 * the workers sharing the test's or benchmark's session (measured: bids/s with two workers fell
 * from 2,369–2,928 to 1,811–2,348 on 2 cores).
 */
export function spawnLocalServer(command: string, args: string[], options: SpawnOptions, deathSignal: "INT" | "TERM", ownProcessGroup = false): ChildProcess {
  const [file, argv] = hasPdeathsig() ? ["setpriv", ["--pdeathsig", deathSignal, "--", command, ...args]] : [command, args];
  return spawn(file, argv, { ...options, detached: ownProcessGroup });
}

export async function startNatsServer(options: NatsServerOptions): Promise<RunningNatsServer> {
  const binary = options.binary ?? findNatsServer();
  if (!binary) throw new HostError(ErrorCode.NatsServerMissing, INSTALL_HINT);
  const host = options.host ?? "127.0.0.1";
  const portsDir = options.portsDir ?? options.storeDir;
  mkdirSync(options.storeDir, { recursive: true });
  mkdirSync(portsDir, { recursive: true });
  const args = ["-a", host, "-p", String(options.port ?? -1), "-js", "-sd", options.storeDir, "--ports_file_dir", portsDir];
  if (options.httpPort !== undefined) args.push("-m", String(options.httpPort));
  if (options.serverName) args.push("-n", options.serverName);
  args.push(...(options.args ?? []));

  const child = spawnLocalServer(binary, args, { stdio: ["ignore", "pipe", "pipe"] }, "TERM", options.ownProcessGroup);
  let out = "";
  const keep = (chunk: Buffer) => {
    out += chunk.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });

  const pid = child.pid!;
  const portsFile = join(portsDir, `${binary.split("/").pop()}_${pid}.ports`);
  const deadline = Date.now() + 15_000;
  let ports: { nats?: string[]; monitoring?: string[] } | undefined;
  while (Date.now() < deadline) {
    if (exited) throw new HostError(ErrorCode.NatsServerStart, `nats-server exited during start-up:\n${out}`);
    if (existsSync(portsFile)) {
      try {
        ports = JSON.parse(readFileSync(portsFile, "utf8"));
        if (ports?.nats?.length) break;
      } catch {
        // partially written; read again
      }
    }
    await sleep(20);
  }
  if (!ports?.nats?.length) {
    child.kill("SIGKILL");
    const files = existsSync(portsDir) ? readdirSync(portsDir).join(", ") : "";
    throw new HostError(ErrorCode.NatsServerStart, `nats-server did not report its ports within 15s (files: ${files}):\n${out}`);
  }
  const url = ports.nats[0]!;
  const port = Number(new URL(url).port);
  const monitorUrl = ports.monitoring?.[0];

  // a server must not outlive the process that started it, whatever way that process ends
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));

  const stop = async () => {
    if (exited) return;
    const done = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await done;
    clearTimeout(timer);
  };
  return { url, port, monitorUrl, pid, process: child, output: () => out, stop };
}
