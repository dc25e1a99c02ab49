import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, platform, release, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { findNatsServer, startNatsServer } from "../host/natsServer.ts";
import { waitFor as pollUntil } from "syntropism/testing";

// Shared by every benchmark: statistics, the printed table, a private nats-server per benchmark,
// the machine description and the results files.

export const BENCH_DIR = import.meta.dirname;
export const ROOT = resolve(BENCH_DIR, "..");
export const RESULTS_DIR = join(BENCH_DIR, "results");
export { sleep };

/** Wall-clock milliseconds with sub-millisecond resolution; comparable between processes. */
export const nowMs = (): number => performance.timeOrigin + performance.now();

// ------------------------------------------------------------------------------------ statistics

export type Summary = { n: number; mean: number; p50: number; p95: number; p99: number; max: number };

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function summarize(values: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n: sorted.length,
    mean: round(sorted.length ? sum / sorted.length : NaN),
    p50: round(percentile(sorted, 50)),
    p95: round(percentile(sorted, 95)),
    p99: round(percentile(sorted, 99)),
    max: round(percentile(sorted, 100)),
  };
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** `a / b` rounded, or null when either is missing. */
export function ratio(a: number | undefined, b: number | undefined): number | null {
  return a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? null : round(a / b, 2);
}

// ----------------------------------------------------------------------------------------- table

export type Cell = string | number | boolean | null | undefined;

export function fmt(v: Cell): string {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return "-";
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  }
  return String(v);
}

/** A plain-text table; numbers are right-aligned. */
export function formatTable(headers: string[], rows: Cell[][]): string {
  const text = rows.map((r) => r.map(fmt));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? "").length)));
  const numeric = headers.map((_, i) => rows.every((r) => typeof r[i] === "number" || r[i] === null || r[i] === undefined));
  const line = (cells: string[]) => cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...text.map(line)].join("\n");
}

// -------------------------------------------------------------------------------------- verdicts

export type Verdict = "PASS" | "FAIL" | "n/a";

export type Target = { what: string; verdict: Verdict; detail: string };

export const verdictOf = (ok: boolean | undefined): Verdict => (ok === undefined ? "n/a" : ok ? "PASS" : "FAIL");

/** What one benchmark hands back to the runner. */
export type BenchResult = {
  name: string;
  options: Record<string, unknown>;
  table: { headers: string[]; rows: Cell[][] };
  /** Raw figures per variant, written to the JSON results. */
  variants: Record<string, unknown>[];
  targets: Target[];
  notes?: string[];
  /** Version of the nats-server the benchmark ran against. */
  natsVersion: string;
};

// ---------------------------------------------------------------------------------------- server

export type BenchServer = {
  url: string;
  pid: number;
  version: string;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  stop(): Promise<void>;
};

/** A private nats-server with JetStream: random loopback port, temporary store, removed on stop. */
export async function startBenchServer(name: string): Promise<BenchServer> {
  const dir = mkdtempSync(join(tmpdir(), `syntropism-bench-${name}-`));
  const server = await startNatsServer({ storeDir: join(dir, "js"), portsDir: dir, port: -1 });
  const nc = await connect({ servers: server.url, name: `bench-${name}` });
  return {
    url: server.url,
    pid: server.pid,
    version: nc.info?.version ?? "unknown",
    nc,
    js: jetstream(nc),
    jsm: await jetstreamManager(nc),
    async stop() {
      await nc.close().catch(() => {});
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ----------------------------------------------------------------------------------------- setup

export function setupInfo(natsVersion: string | undefined) {
  const cpu = cpus();
  return {
    cpu_model: cpu[0]?.model.trim() ?? "unknown",
    cpu_cores: cpu.length,
    memory_gib: round(totalmem() / 2 ** 30, 1),
    platform: `${platform()} ${release()}`,
    node: process.version,
    nats_server: natsVersion ?? "unknown",
    nats_server_binary: findNatsServer() ?? "not found",
    git: gitState(),
  };
}

/** The commit measured, and whether the working tree differed from it. */
function gitState(): { commit: string; dirty: boolean } | undefined {
  const run = (args: string[]) => spawnSync("git", args, { cwd: ROOT, encoding: "utf8" });
  const head = run(["rev-parse", "HEAD"]);
  if (head.status !== 0) return undefined;
  const status = run(["status", "--porcelain", "--", "host", "bench", "package.json"]);
  return { commit: head.stdout.trim(), dirty: status.stdout.trim() !== "" };
}

// --------------------------------------------------------------------------------------- results

export function writeResults(data: unknown): { file: string; latest: string } {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/:/g, "-").replace(/\.\d+Z$/, "Z");
  const file = join(RESULTS_DIR, `${stamp}.json`);
  const latest = join(RESULTS_DIR, "latest.json");
  const text = `${JSON.stringify(data, null, 2)}\n`;
  writeFileSync(file, text);
  writeFileSync(latest, text);
  return { file, latest };
}

// ------------------------------------------------------------------------------------------ misc

/** The test helpers' waitFor, polling every 20 ms by default (benchmarks wait on fast changes). */
export function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, everyMs = 20): Promise<T> {
  return pollUntil(what, probe, timeoutMs, everyMs);
}

/** A JSON payload of about `bytes` bytes: `{"t":<ms>,"i":<n>,"pad":"xxx…"}`. */
export function payloadOf(bytes: number, t: number, i: number): string {
  const head = `{"t":${t},"i":${i},"pad":"`;
  return `${head}${"x".repeat(Math.max(0, bytes - head.length - 2))}"}`;
}

export const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
