import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { BENCH_DIR, ROOT } from "./lib.ts";

// Child processes a benchmark measures: the host (`host start --workers N`, exactly as deployed) and
// the raw nats.js baseline (bench/raw/worker.ts). Both run outside the bench process, so the
// process that publishes and measures never shares an event loop with the one under test.

export type Proc = {
  pid: number;
  output(): string;
  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves when the process has exited. */
  stop(timeoutMs?: number): Promise<void>;
};

function track(child: ChildProcess, what: string, ready: (out: string) => boolean, readyTimeoutMs: number): Promise<Proc> {
  let out = "";
  const keep = (c: Buffer) => {
    out += c.toString();
    if (out.length > 400_000) out = out.slice(-200_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const proc: Proc = {
    pid: child.pid!,
    output: () => out,
    async stop(timeoutMs = 15_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
        await exited;
        clearTimeout(timer);
      }
      process.off("exit", killOnExit);
    },
  };
  return new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${what} was not ready within ${readyTimeoutMs} ms:\n${out.slice(-4000)}`));
    }, readyTimeoutMs);
    const check = () => {
      if (ready(out)) {
        clearTimeout(timer);
        child.stdout?.off("data", check);
        child.stderr?.off("data", check);
        resolveReady(proc);
      }
    };
    child.stdout?.on("data", check);
    child.stderr?.on("data", check);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready:\n${out.slice(-4000)}`));
    });
  });
}

function profileArgs(profileDir: string | undefined, label: string): string[] {
  if (!profileDir) return [];
  const dir = resolve(profileDir, label);
  mkdirSync(dir, { recursive: true });
  return ["--cpu-prof", "--cpu-prof-dir", dir];
}

export type HostProcOptions = { url: string; workers: number; env?: Record<string, string>; profileDir?: string; label?: string };

/** `host start --workers N --apply` on the bench functions; resolves once every worker is ready. */
export function startHostProcess(o: HostProcOptions): Promise<Proc> {
  const args = [
    ...profileArgs(o.profileDir, o.label ?? `host-w${o.workers}`),
    join(ROOT, "bin/host.mjs"),
    "start",
    "--workers",
    String(o.workers),
    "--apply",
    "--grace",
    "2000",
    "--config",
    join(BENCH_DIR, "streams.config.ts"),
    "--functions",
    join(BENCH_DIR, "functions"),
  ];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, NATS_URL: o.url, LOG_LEVEL: "info", ...o.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return track(child, `host start --workers ${o.workers}`, (out) => out.includes('"all workers ready"'), 60_000);
}

/** The raw nats.js baseline: `respond SUBJECT` or `consume STREAM CONSUMER MAX_MESSAGES [report]`. */
export function startRawWorker(url: string, args: string[], opts: { profileDir?: string; label?: string } = {}): Promise<Proc> {
  const child = spawn(process.execPath, [...profileArgs(opts.profileDir, opts.label ?? "raw"), "--import", "tsx", join(BENCH_DIR, "raw/worker.ts"), ...args], {
    cwd: ROOT,
    env: { ...process.env, NATS_URL: url },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return track(child, `raw worker ${args.join(" ")}`, (out) => out.includes("ready\n"), 30_000);
}
