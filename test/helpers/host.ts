import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { JetStreamManager, MsgRequest, StoredMsg } from "@nats-io/jetstream";
import { loadConfigFile } from "../../host/configFile.ts";
import { createLogger } from "../../host/log.ts";
import { Host, type HostOptions } from "../../host/runtime.ts";
import type { TestNats } from "./nats.ts";

export const ROOT = resolve(import.meta.dirname, "../..");
export const FIXTURES = resolve(ROOT, "test/fixtures");
export const FIXTURE_FUNCTIONS = resolve(FIXTURES, "functions");
export const FIXTURE_CONFIG = resolve(FIXTURES, "streams.config.ts");
export const HOST_BIN = resolve(ROOT, "bin/host.mjs");

type After = { after: (fn: () => Promise<void>) => void };

/** An in-process host on the fixtures, logging into `lines` (warn and up unless LOG_LEVEL says). */
export async function startHost(t: After, nats: TestNats, opts: Partial<HostOptions> = {}) {
  const lines: string[] = [];
  const config = opts.config ?? (await loadConfigFile(FIXTURE_CONFIG));
  const host = new Host({
    servers: nats.url,
    functionsDir: FIXTURE_FUNCTIONS,
    config,
    onDrift: "apply",
    graceMs: 5000,
    log: createLogger({ level: (process.env.LOG_LEVEL as "debug") ?? "warn", sink: (l) => lines.push(l) }),
    ...opts,
  });
  t.after(() => host.stop());
  await host.start();
  return { host, lines };
}

import { waitFor } from "../../testing/wait.ts";
export { waitFor };

/** Every stored message on `filter` in `stream`, oldest first (direct gets; fine for test sizes). */
export async function readSubject(jsm: JetStreamManager, stream: string, filter: string): Promise<StoredMsg[]> {
  const info = await jsm.streams.info(stream);
  const out: StoredMsg[] = [];
  let seq = info.state.first_seq;
  while (seq <= info.state.last_seq) {
    const m = await jsm.streams.getMessage(stream, { seq, next_by_subj: filter } as unknown as MsgRequest).catch(() => null);
    if (!m) break;
    out.push(m);
    seq = m.seq + 1;
  }
  return out;
}

export async function countSubject(jsm: JetStreamManager, stream: string, filter: string): Promise<number> {
  const info = await jsm.streams.info(stream, { subjects_filter: filter });
  return Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
}

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
