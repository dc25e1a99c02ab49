import * as v from "valibot";
import type { ConsumerDefaults } from "./config.ts";
import type { FunctionDefinition, Trigger } from "./define.ts";
import { ErrorCode, HostError } from "./errors.ts";
import { isValidSubject } from "./subjects.ts";

// A function definition with every option resolved against the config's consumer defaults, plus
// the per-worker statistics that $SRV.STATS and `host status` report.

export type FunctionStats = {
  received: number;
  succeeded: number;
  failed: number;
  deadLettered: number;
  deferred: number;
  processingNs: bigint;
  lastError: string;
  startedAt: string;
  /** The most recent handling times, for percentiles in $SRV.STATS and `host status`. */
  recent: LatencyWindow;
  /** Whether the trigger's loop (pull, subscription, timer) is taking work: shown by status and health. */
  loop: LoopState;
};

/**
 * `running`: taking work. `degraded`: its pull or subscription failed and it is recovering (with
 * the error and since when). `stopped`: the host stopped it.
 */
export type LoopState = { state: "running" | "degraded" | "stopped"; since: string; error: string; recoveries: number };

/** Marks the loop degraded (once per outage: `since` keeps the first failure's time). */
export function loopDegraded(stats: FunctionStats, error: string): void {
  const l = stats.loop;
  if (l.state !== "degraded") {
    l.state = "degraded";
    l.since = new Date().toISOString();
  }
  l.error = error;
}

/** Marks the loop running again; returns true when it was degraded (a recovery). */
export function loopRunning(stats: FunctionStats): boolean {
  const l = stats.loop;
  if (l.state === "running") return false;
  const recovered = l.state === "degraded";
  l.state = "running";
  l.since = new Date().toISOString();
  l.error = "";
  if (recovered) l.recoveries++;
  return recovered;
}

/** Adds one handling (from `started`, a process.hrtime.bigint()) to a function's statistics. */
export function recordRun(stats: FunctionStats, started: bigint): void {
  const elapsed = process.hrtime.bigint() - started;
  stats.processingNs += elapsed;
  stats.recent.add(Number(elapsed) / 1e6);
}

/** A ring of the last `size` durations (ms). */
export class LatencyWindow {
  readonly #values: Float64Array;
  #next = 0;
  #count = 0;
  constructor(size = 1024) {
    this.#values = new Float64Array(size);
  }
  add(ms: number): void {
    this.#values[this.#next] = ms;
    this.#next = (this.#next + 1) % this.#values.length;
    this.#count = Math.min(this.#count + 1, this.#values.length);
  }
  /** Nearest-rank percentile (0..100) of the window; 0 when empty. */
  percentile(p: number): number {
    if (this.#count === 0) return 0;
    const sorted = Array.from(this.#values.subarray(0, this.#count)).sort((a, b) => a - b);
    const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[rank]!;
  }
}

export type ResolvedFunction = {
  id: string;
  file: string;
  def: FunctionDefinition;
  trigger: Trigger;
  /** Durable consumer name (JetStream) — the id with `/` replaced by `_`. */
  consumer: string;
  concurrency: number;
  /** Messages one worker holds at once (≥ concurrency). */
  prefetch: number;
  timeoutMs: number;
  maxDeliver: number;
  ackWaitMs: number;
  maxAckPending: number;
  maxPayloadBytes: number;
  backoff: Required<NonNullable<FunctionDefinition["backoff"]>>;
  stats: FunctionStats;
  /** Streams this function has published to; its pulling slows while any is above high water. */
  outputs: Set<string>;
  /** `ctx.resources`: the shared resources it names and its own setup's, set when it starts. */
  resources: Record<string, unknown>;
};

const ID = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/;
const subject = v.pipe(v.string(), v.check((s) => isValidSubject(s, { wildcards: true }), "is not a valid subject"));

const TriggerSchema = v.variant("type", [
  v.strictObject({ type: v.literal("jetstream"), stream: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+$/)), subject }),
  v.strictObject({ type: v.literal("request"), subject, queue: v.optional(v.string()) }),
  v.strictObject({ type: v.literal("schedule"), everyMs: v.pipe(v.number(), v.integer(), v.minValue(10)) }),
]);

export function consumerNameOf(id: string): string {
  return id.replaceAll("/", "_");
}

export function newStats(): FunctionStats {
  const now = new Date().toISOString();
  return {
    received: 0, succeeded: 0, failed: 0, deadLettered: 0, deferred: 0, processingNs: 0n, lastError: "", startedAt: now, recent: new LatencyWindow(),
    loop: { state: "running", since: now, error: "", recoveries: 0 },
  };
}

export function resolveFunction(id: string, file: string, def: FunctionDefinition, defaults: ConsumerDefaults, settings: Readonly<Record<string, unknown>> = {}): ResolvedFunction {
  const fail = (why: string): never => {
    throw new HostError(ErrorCode.FunctionLoad, `${file}: ${why}`);
  };
  if (!ID.test(id)) fail(`function id "${id}" must be path segments of letters, digits, _ and -`);
  let declared: unknown = def.trigger;
  if (typeof def.trigger === "function") {
    try {
      declared = def.trigger(settings);
    } catch (err) {
      fail(`trigger(settings) failed: ${(err as Error).message}`);
    }
  }
  const t = v.safeParse(TriggerSchema, declared);
  if (!t.success) fail(`trigger is invalid: ${t.issues.map((i) => `${v.getDotPath(i) ?? "trigger"}: ${i.message}`).join("; ")}`);
  if (typeof def.handler !== "function") fail("handler must be a function");
  if (def.setup !== undefined && typeof def.setup !== "function") fail("setup must be a function");
  if (def.release !== undefined && typeof def.release !== "function") fail("release must be a function");
  if (def.resources !== undefined && (typeof def.resources !== "object" || def.resources === null)) fail("resources must be an object of defineResource(...) values");
  if (def.schema !== undefined && (typeof def.schema !== "object" || def.schema === null || !("~standard" in def.schema || "kind" in def.schema))) {
    fail("schema must be a valibot schema");
  }
  const int = (name: string, value: unknown, fallback: number, min = 1): number => {
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value < min) fail(`${name} must be a number ≥ ${min}`);
    return Math.floor(value as number);
  };
  if (def.rateLimit) {
    int("rateLimit.limit", def.rateLimit.limit, 1);
    int("rateLimit.periodMs", def.rateLimit.periodMs, 1);
  }
  const b = def.backoff ?? {};
  const bd = defaults.backoff;
  const concurrency = int("concurrency", def.concurrency, defaults.concurrency);
  return {
    id,
    file,
    def,
    trigger: t.output as Trigger,
    consumer: consumerNameOf(id),
    concurrency,
    prefetch: Math.max(concurrency, int("prefetch", def.prefetch, defaults.prefetch)),
    timeoutMs: int("timeoutMs", def.timeoutMs, defaults.timeoutMs),
    maxDeliver: int("maxDeliver", def.maxDeliver, defaults.maxDeliver),
    ackWaitMs: int("ackWaitMs", def.ackWaitMs, defaults.ackWaitMs, 1000),
    maxAckPending: int("maxAckPending", def.maxAckPending, defaults.maxAckPending),
    maxPayloadBytes: int("maxPayloadBytes", def.maxPayloadBytes, defaults.maxPayloadBytes),
    backoff: {
      initialMs: int("backoff.initialMs", b.initialMs, bd.initialMs, 0),
      maxMs: int("backoff.maxMs", b.maxMs, bd.maxMs, 0),
      factor: b.factor ?? bd.factor,
      jitter: b.jitter ?? bd.jitter,
    },
    stats: newStats(),
    outputs: new Set(),
    resources: {},
  };
}

/** Delay before attempt `attempt + 1`: exponential with ± jitter, capped. */
export function backoffDelay(b: ResolvedFunction["backoff"], attempt: number, random = Math.random): number {
  const base = Math.min(b.maxMs, b.initialMs * b.factor ** Math.max(0, attempt - 1));
  const spread = base * b.jitter;
  return Math.max(0, Math.min(b.maxMs, Math.round(base - spread + random() * 2 * spread)));
}
