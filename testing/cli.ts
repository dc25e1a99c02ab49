import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { waitFor } from "./wait.ts";

// The `host` command line as a child process, the way a user runs it: to completion (runCli), or
// long-running with its JSON log lines collected (startCli: `host start`, `host dev`).

const ROOT = resolve(import.meta.dirname, "..");
export const HOST_BIN = resolve(ROOT, "bin/host.mjs");

type After = { after: (fn: () => Promise<void>) => void };

export type RunResult = { code: number | null; stdout: string; stderr: string };

/** Runs `node ...argv` to completion (killed after `timeoutMs`, default 60 s), collecting its output. */
export function runNode(argv: string[], env: Record<string, string>, opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, argv, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${argv.join(" ")} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Runs `host ...` to completion. */
export function runCli(args: string[], env: Record<string, string>, opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return runNode([HOST_BIN, ...args], env, opts);
}

export type CliProcess = {
  child: ChildProcess;
  output: () => string;
  /** Parsed JSON log lines so far. */
  logs: () => Record<string, unknown>[];
  waitForLog: (what: string, pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number) => Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop: (signal?: NodeJS.Signals) => Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
};

/** Starts a long-running `host ...` (start, dev) and keeps its output. */
export function startCli(t: After, args: string[], env: Record<string, string>, opts: { cwd?: string } = {}): CliProcess {
  const child = spawn(process.execPath, [HOST_BIN, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (c) => (out += c));
  child.stderr!.on("data", (c) => (out += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on("exit", (code, signal) => r({ code, signal })));
  const logs = () =>
    out.split("\n").flatMap((l) => {
      if (!l.startsWith("{")) return [];
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  t.after(async () => {
    await stop("SIGTERM");
  });
  return {
    child,
    output: () => out,
    logs,
    waitForLog: (what, pred, timeoutMs = 30_000) =>
      waitFor(what, () => {
        if (child.exitCode !== null) throw new Error(`host exited (${child.exitCode}) before ${what}:\n${out}`);
        return logs().find(pred);
      }, timeoutMs).catch((err) => {
        throw new Error(`${(err as Error).message}\n--- host output ---\n${out}`);
      }),
    exited,
    stop,
  };
}
