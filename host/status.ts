import { setTimeout as sleep } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";
import type { HostConfig } from "./config.ts";
import { dlqSubject } from "./deadLetter.ts";

// `host status`: what the server knows (consumer state, dead-letter counts) joined with what the
// running workers report on $SRV.STATS, sampled twice to compute throughput.

export type FunctionStatus = {
  fn: string;
  trigger: "jetstream" | "request" | "unknown";
  subject: string;
  stream?: string;
  consumer?: string;
  /** Workers currently running this function. */
  workers: number;
  pending?: number;
  ackPending?: number;
  redelivered?: number;
  deadLetters: number;
  /** Messages handled per second during the sampling interval, all workers together. */
  ratePerSec: number;
  /** Since each worker started. */
  handled: number;
  errors: number;
  avgMs: number;
  p50Ms: number;
  p99Ms: number;
  lastError: string;
  /**
   * `running` when every worker's loop for it takes work; `degraded` when any worker's pull or
   * subscription is failing (see `problems`); `idle` when no worker runs it.
   */
  state: "running" | "degraded" | "idle";
  /** One line per worker whose loop is not running: its error and since when. */
  problems: string[];
};

export type StatusReport = { at: string; intervalMs: number; workers: number; functions: FunctionStatus[] };

type Endpoint = {
  name: string;
  subject: string;
  metadata?: Record<string, string>;
  num_requests: number;
  num_errors: number;
  last_error: string;
  average_processing_time: number;
  data?: { p50_ms?: number; p99_ms?: number; loop?: string; loop_since?: string; loop_error?: string };
};
type StatsResponse = { id: string; endpoints: Endpoint[] };

async function sampleStats(nc: NatsConnection, service: string, waitMs = 500): Promise<StatsResponse[]> {
  const replies: StatsResponse[] = [];
  const iter = await nc.requestMany(`$SRV.STATS.${service}`, "", { maxWait: waitMs, strategy: "stall", stall: 200 }).catch(() => null);
  if (!iter) return replies;
  try {
    for await (const m of iter) {
      try {
        replies.push(m.json<StatsResponse>());
      } catch {
        // not a stats response; ignore
      }
    }
  } catch {
    // no responders: no workers are running
  }
  return replies;
}

export async function collectStatus(nc: NatsConnection, jsm: JetStreamManager, config: HostConfig, opts: { intervalMs: number }): Promise<StatusReport> {
  const service = config.service.name;
  const first = await sampleStats(nc, service);
  if (opts.intervalMs > 0 && first.length) await sleep(opts.intervalMs);
  const second = opts.intervalMs > 0 && first.length ? await sampleStats(nc, service) : first;

  const byFn = new Map<string, FunctionStatus>();
  const entry = (fn: string): FunctionStatus => {
    let s = byFn.get(fn);
    if (!s) {
      s = { fn, trigger: "unknown", subject: "", workers: 0, deadLetters: 0, ratePerSec: 0, handled: 0, errors: 0, avgMs: 0, p50Ms: 0, p99Ms: 0, lastError: "", state: "idle", problems: [] };
      byFn.set(fn, s);
    }
    return s;
  };

  const before = new Map<string, number>();
  for (const r of first) for (const e of r.endpoints) before.set(`${r.id}/${e.name}`, e.num_requests);
  const weighted = new Map<string, number>();
  for (const r of second) {
    for (const e of r.endpoints) {
      const fn = e.metadata?.function ?? e.name;
      const s = entry(fn);
      s.trigger = (e.metadata?.trigger as FunctionStatus["trigger"]) ?? "unknown";
      s.subject = e.subject;
      if (e.metadata?.stream) s.stream = e.metadata.stream;
      if (e.metadata?.consumer) s.consumer = e.metadata.consumer;
      s.workers++;
      const loop = e.data?.loop ?? "running";
      if (loop === "degraded" || loop === "stopped") {
        s.state = "degraded";
        s.problems.push(`worker ${r.id}: ${loop} since ${e.data?.loop_since ?? "?"}${e.data?.loop_error ? ` — ${e.data.loop_error}` : ""}`);
      } else if (s.state === "idle") s.state = "running";
      s.handled += e.num_requests;
      s.errors += e.num_errors;
      if (e.last_error) s.lastError = e.last_error;
      const prev = before.get(`${r.id}/${e.name}`);
      if (prev !== undefined && opts.intervalMs > 0) s.ratePerSec += ((e.num_requests - prev) * 1000) / opts.intervalMs;
      weighted.set(fn, (weighted.get(fn) ?? 0) + (e.average_processing_time / 1e6) * e.num_requests);
      s.p50Ms = Math.max(s.p50Ms, e.data?.p50_ms ?? 0);
      s.p99Ms = Math.max(s.p99Ms, e.data?.p99_ms ?? 0);
    }
  }
  for (const [fn, total] of weighted) {
    const s = byFn.get(fn)!;
    s.avgMs = s.handled ? Math.round((total / s.handled) * 1000) / 1000 : 0;
  }

  // functions whose durable consumers exist even when no worker runs them
  for (const spec of config.streams) {
    try {
      for await (const ci of jsm.consumers.list(spec.name)) {
        const desc = ci.config.description ?? "";
        if (!desc.startsWith("syntropism function ")) continue;
        const s = entry(desc.slice("syntropism function ".length));
        s.trigger = "jetstream";
        s.stream = spec.name;
        s.consumer = ci.name;
        s.subject ||= ci.config.filter_subject ?? "";
        s.pending = ci.num_pending;
        s.ackPending = ci.num_ack_pending;
        s.redelivered = ci.num_redelivered;
      }
    } catch (err) {
      // a stream the config declares but the server lacks: its functions' loops say so
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    }
  }

  const { stream: dlqStream, subjectPrefix } = config.deadLetter;
  try {
    const info = await jsm.streams.info(dlqStream, { subjects_filter: `${subjectPrefix}.>` });
    const counts = info.state.subjects ?? {};
    for (const s of byFn.values()) s.deadLetters = counts[dlqSubject(subjectPrefix, s.fn)] ?? 0;
  } catch {
    // no dead-letter stream yet
  }

  const functions = [...byFn.values()].sort((a, b) => a.fn.localeCompare(b.fn));
  for (const s of functions) s.ratePerSec = Math.round(s.ratePerSec * 10) / 10;
  return { at: new Date().toISOString(), intervalMs: opts.intervalMs, workers: second.length, functions };
}

export function formatStatus(r: StatusReport): string {
  if (!r.functions.length) return "No functions: no worker answers $SRV.STATS and no function consumers exist.";
  const head = ["FUNCTION", "STATE", "TRIGGER", "SUBJECT", "WORKERS", "PENDING", "ACK PENDING", "REDELIVERED", "DLQ", "MSG/S", "HANDLED", "ERRORS", "AVG MS", "P50 MS", "P99 MS"];
  const n = (x: number | undefined) => (x === undefined ? "-" : String(x));
  const rows = r.functions.map((f) => [
    f.fn, f.state, f.trigger, f.subject, String(f.workers), n(f.pending), n(f.ackPending), n(f.redelivered), String(f.deadLetters),
    String(f.ratePerSec), String(f.handled), String(f.errors), String(f.avgMs), String(f.p50Ms), String(f.p99Ms),
  ]);
  const degraded = r.functions.filter((f) => f.state === "degraded");
  const notes = degraded.length ? `\n\nDEGRADED\n${degraded.flatMap((f) => f.problems.map((p) => `  ${f.fn}  ${p}`)).join("\n")}` : "";
  return `${r.workers} worker(s) answering; throughput sampled over ${r.intervalMs} ms\n${table(head, rows)}${notes}`;
}

export type Health = { status: "ok" | "degraded" | "down"; workers: number; degraded: { fn: string; problems: string[] }[] };

/**
 * `ok`: workers answer and every function's loop runs in each; `degraded`: some loop is failing
 * (named, with its error); `down`: no worker answers.
 */
export function healthOf(r: StatusReport): Health {
  const degraded = r.functions.filter((f) => f.state === "degraded").map((f) => ({ fn: f.fn, problems: f.problems }));
  return { status: r.workers === 0 ? "down" : degraded.length ? "degraded" : "ok", workers: r.workers, degraded };
}

/** Left-aligned columns separated by two spaces. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (c ?? "").padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}
