import PQueue from "p-queue";
import { setTimeout as sleep } from "node:timers/promises";
import { JetStreamApiCodes, JetStreamApiError, type Consumer, type ConsumerMessages, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import type { MessageInfo } from "./define.ts";
import { createContext, decodePayload, Delivery, type ContextDeps } from "./context.ts";
import { writeDeadLetter } from "./deadLetter.ts";
import {
  ErrorCode,
  HostError,
  classify,
  coerceError,
  isNonRetriable,
  isRetryAfter,
  isStreamFull,
  serializeError,
  type SerializedError,
} from "./errors.ts";
import { Header, headerRecord } from "./headers.ts";
import type { RateLimiter } from "./rateLimit.ts";
import { backoffDelay, loopDegraded, loopRunning, recordRun, type ResolvedFunction } from "./resolved.ts";
import { ensureConsumer } from "./consumer.ts";
import type { RunRecords } from "./runRecords.ts";
import type { ServerFeatures } from "./serverFeatures.ts";
import { Cancellation, runHandler, ShutdownAbort, TIMED_OUT, within } from "./runHandler.ts";
import type { Logger } from "./log.ts";
import { Attr, endSpan, extractContext, otelContext, startDeliverySpan, trace } from "./tracing.ts";
import type { Span } from "@opentelemetry/api";

// One durable pull consumer per function. Messages are pulled in small batches, at most
// `2 × concurrency` are held by this worker at once, and each ends in exactly one outcome:
//   ack · term + dead letter · nak(delay) counted as a failure · nak(delay) counted as a deferral.
// Deferrals (rate limit, backpressure, shutdown) are recorded in KV so they do not spend the
// message's maxDeliver budget; the consumer itself has max_deliver -1 and the host enforces it.
//
// The loop never ends on its own: a failed pull (heartbeats missed, connection lost, consumer or
// stream deleted, server restarted) marks the function degraded, waits with backoff, re-binds the
// consumer (recreating it from the definition when it is gone) and pulls again.
//
// A worker that dies takes no outcome with it: every message it held — up to the whole prefetch,
// most never started — comes back with one more delivery. So deliveries past maxDeliver do not
// condemn a message by themselves: it is run alone (nothing else of the function runs in this worker
// meanwhile), counted in KV before it starts. Should the worker die again, the count stays; after
// POISON_TRIALS such runs without an outcome the message is dead-lettered as poison.

/** How long one pull waits for messages; also the longest a stop waits for an open pull. */
const FETCH_EXPIRES_MS = 1000;
/** Runs alone, without an outcome, after which a message past its budget is judged poison. */
export const POISON_TRIALS = 3;
/** Longest wait before retrying a message whose dependency was unavailable (a transient error). */
const TRANSIENT_MAX_DELAY_MS = 2000;
/** Re-binding after a failed pull: first wait, doubling to the cap. */
const REBIND_INITIAL_MS = 100;
const REBIND_MAX_MS = 5000;

export type JetStreamDeps = ContextDeps & {
  jsm: JetStreamManager;
  runs: RunRecords;
  limiter: RateLimiter;
  deadLetters: { stream: string; prefix: string };
  features: ServerFeatures;
};

type Outcome =
  | { kind: "ack" }
  | { kind: "dead"; reason: string; error: SerializedError }
  | { kind: "retry"; delayMs: number; error: SerializedError }
  | { kind: "defer"; delayMs: number; why: string };

export class JetStreamTrigger {
  readonly fn: ResolvedFunction;
  readonly #deps: JetStreamDeps;
  readonly #queue: PQueue;
  readonly #held = new Set<Promise<void>>();
  /** Messages this worker holds (waiting or running): one timer keeps all their leases. */
  readonly #leased = new Set<JsMsg>();
  #heartbeat?: NodeJS.Timeout;
  /** Resolved whenever a held message is settled, so the pull loop can wait for room cheaply. */
  #room?: { promise: Promise<void>; resolve: () => void };
  /** Acks, naks and terms of one event-loop turn go out together: one socket write, not one each. */
  #settles: (() => void)[] = [];
  #settled?: { promise: Promise<void>; resolve: () => void };
  readonly #running = new Set<Cancellation>();
  readonly #stop = new AbortController();
  #loop?: Promise<void>;
  /** Resolved when the current run-alone (if any) ends; trials take turns. */
  #alone: Promise<void> = Promise.resolve();

  readonly #log: Logger;

  constructor(fn: ResolvedFunction, deps: JetStreamDeps) {
    this.fn = fn;
    this.#deps = deps;
    this.#log = deps.log.child({ fn: fn.id, stream: (fn.trigger as { stream: string }).stream });
    this.#queue = new PQueue({ concurrency: fn.concurrency });
  }

  get inFlight(): number {
    return this.#held.size;
  }

  /** Binds the consumer (failing start-up when it cannot), then runs the pull loop until stop(). */
  async start(): Promise<void> {
    const consumer = await this.#bind();
    this.#heartbeat = setInterval(() => {
      for (const m of this.#leased) m.working();
    }, Math.max(250, Math.floor(this.fn.ackWaitMs / 3)));
    this.#heartbeat.unref();
    this.#loop = this.#run(consumer);
  }

  /** The function's consumer; created from the definition when it (not its stream) is missing. */
  async #bind(): Promise<Consumer> {
    const stream = (this.fn.trigger as { stream: string }).stream;
    try {
      return await this.#deps.js.consumers.get(stream, this.fn.consumer);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) {
        throw new HostError(ErrorCode.Config, `stream ${stream} does not exist (deleted?); \`host streams apply\` creates it from streams.config.ts`, { cause: err });
      }
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
      await ensureConsumer(this.#deps.jsm, this.fn);
      this.#log.warn({ consumer: this.fn.consumer }, "consumer was missing; recreated it from the function's definition");
      return this.#deps.js.consumers.get(stream, this.fn.consumer);
    }
  }

  /** Pulls until stopped; any failure of a pull is survived by re-binding with backoff. */
  async #run(first: Consumer): Promise<void> {
    let consumer: Consumer | undefined = first;
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      try {
        consumer ??= await this.#bind();
        await this.#pull(consumer);
        if (loopRunning(this.fn.stats)) this.#log.info({ recoveries: this.fn.stats.loop.recoveries }, "consumer loop recovered");
        failures = 0;
      } catch (err) {
        if (this.#stop.signal.aborted) break;
        failures++;
        consumer = undefined;
        const e = coerceError(err);
        const wait = Math.min(REBIND_MAX_MS, REBIND_INITIAL_MS * 2 ** Math.min(failures - 1, 10));
        loopDegraded(this.fn.stats, `${(e as { code?: unknown }).code ?? e.name}: ${e.message}`);
        // the first failure of an outage is a warning; repeats are debug lines, not a flood
        (failures === 1 ? this.#log.warn : this.#log.debug)({ err: e, failures, retry_in_ms: wait }, "pull failed; re-binding the consumer");
        await sleep(wait, undefined, { signal: this.#stop.signal }).catch(() => {});
      }
    }
    this.fn.stats.loop.state = "stopped";
  }

  /**
   * One pull, sized to the capacity this worker has (`prefetch` messages held at most), so a message
   * never waits unleased in a client buffer: from the moment it arrives it is leased and processed.
   * A pull is made when half the capacity is free (batching) or nothing is held. Throws when the
   * pull fails; messages it delivered before failing are being processed all the same.
   */
  async #pull(consumer: Consumer): Promise<void> {
    const limit = this.fn.prefetch;
    const batchAt = Math.max(1, Math.floor(limit / 2));
    while (this.#held.size > limit - batchAt && !this.#stop.signal.aborted) await this.#waitForRoom();
    if (this.#stop.signal.aborted) return;
    await this.#slowForOutputs();
    const batch: ConsumerMessages = await consumer.fetch({ max_messages: limit - this.#held.size, expires: FETCH_EXPIRES_MS });
    // the pull is left to run out (≤ FETCH_EXPIRES_MS) even while stopping: a message the server
    // delivers for it is then handed back at once instead of waiting out its ack wait
    for await (const m of batch) {
      if (this.#stop.signal.aborted) {
        await this.#defer(m, 0, "shutdown").catch(() => m.nak());
        continue;
      }
      this.#leased.add(m);
      const p: Promise<void> = this.#process(m)
        .catch((err) => this.#log.child({ seq: m.seq }).error({ err: coerceError(err) }, "message processing failed"))
        .finally(() => {
          this.#leased.delete(m);
          this.#held.delete(p);
          this.#room?.resolve();
        });
      this.#held.add(p);
    }
  }

  #waitForRoom(): Promise<void> {
    if (!this.#room) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.#room = {
        promise,
        resolve: () => {
          this.#room = undefined;
          resolve();
        },
      };
    }
    return this.#room.promise;
  }

  /** Queues an ack/nak/term for the end of this event-loop turn; resolves once it was sent. */
  #settleSoon(settle: () => void): Promise<void> {
    this.#settles.push(settle);
    if (!this.#settled) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.#settled = { promise, resolve };
      setImmediate(() => {
        const batch = this.#settles;
        const done = this.#settled!;
        this.#settles = [];
        this.#settled = undefined;
        for (const fn of batch) {
          try {
            fn();
          } catch (err) {
            this.#log.warn({ err: coerceError(err) }, "could not settle a message; it will be redelivered");
          }
        }
        done.resolve();
      });
    }
    return this.#settled.promise;
  }

  /** Pulls more slowly while a stream this function feeds is above high water. */
  async #slowForOutputs(): Promise<void> {
    const bp = this.#deps.backpressure;
    for (const stream of this.fn.outputs) {
      if (await bp.isAboveHighWater(stream)) {
        // bounded, so messages already buffered by the pull do not outlive their ack wait
        await bp.waitBelowHighWater(stream, this.fn.ackWaitMs / 2, this.#stop.signal);
      }
    }
  }

  async #process(m: JsMsg): Promise<void> {
    const fn = this.fn;
    fn.stats.received++;
    const started = process.hrtime.bigint();
    const deliveryCount = m.info.deliveryCount;
    let deferrals = 0;
    let span: Span | undefined;
    try {
      deferrals = deliveryCount > 1 ? await this.#deps.runs.deferrals(fn.consumer, m.seq).catch(() => 0) : 0;
      const headers = headerRecord(m.headers);
      const info: MessageInfo = {
        fn: fn.id,
        subject: m.subject,
        headers,
        msgId: headers[Header.MsgId] || `${m.info.stream}:${m.seq}`,
        stream: m.info.stream,
        seq: m.seq,
        attempt: Math.max(1, deliveryCount - deferrals),
        deliveryCount,
      };
      const parent = extractContext(m.headers);
      span = startDeliverySpan("process", m.subject, parent, () => ({
        [Attr.messageId]: info.msgId,
        [Attr.consumerGroup]: fn.consumer,
        [Attr.subscription]: fn.consumer,
        [Attr.bodySize]: m.data.length,
        [Attr.deliveryCount]: deliveryCount,
        [Attr.stream]: m.info.stream,
        [Attr.streamSeq]: m.seq,
        [Attr.fn]: fn.id,
        [Attr.attempt]: info.attempt,
        [Attr.correlationId]: headers[Header.CorrelationId] ?? info.msgId,
      }));
      const delivery = new Delivery(span, trace.setSpan(parent, span), this.#deps.log, info);
      const outcome = await this.#decide(m, info, delivery);
      await this.#settle(m, info, outcome, deferrals, delivery);
    } finally {
      recordRun(fn.stats, started);
      if (span?.isRecording()) endSpan(span, "error", { message: "processing ended without an outcome" });
    }
  }

  async #decide(m: JsMsg, info: MessageInfo, delivery: Delivery): Promise<Outcome> {
    const fn = this.fn;
    const decoded = decodePayload(fn, m.data);
    if (!decoded.ok) return { kind: "dead", reason: decoded.code, error: { name: "HostError", code: decoded.code, message: decoded.message } };
    const payload = decoded.payload;
    if (info.attempt > fn.maxDeliver) return this.#trial(m, info, delivery, payload);

    let idemKey: string | undefined;
    if (fn.def.idempotencyKey) {
      try {
        idemKey = fn.def.idempotencyKey(payload, info);
      } catch (err) {
        return { kind: "dead", reason: refusalReason(serializeError(err)), error: serializeError(err) };
      }
      if (idemKey !== undefined && (await this.#deps.runs.isDone(fn.id, idemKey))) {
        delivery.log.info({}, "already completed; acknowledged without running");
        return { kind: "ack" };
      }
    }

    if (fn.def.rateLimit) {
      const rl = fn.def.rateLimit;
      let key = "_";
      try {
        key = rl.key ? String(rl.key(payload, info)) : "_";
      } catch (err) {
        return { kind: "dead", reason: refusalReason(serializeError(err)), error: serializeError(err) };
      }
      const horizon = Math.min(fn.ackWaitMs, 5000);
      const r = await this.#deps.limiter.reserve(fn.id, key, rl, horizon);
      if (!r.reserved) return { kind: "defer", delayMs: r.retryInMs, why: "rate limit" };
      if (r.delayMs > 0) {
        try {
          await sleep(r.delayMs, undefined, { signal: this.#stop.signal });
        } catch {
          return { kind: "defer", delayMs: 0, why: "shutdown" };
        }
      }
    }

    return this.#queue.add(() => this.#runHandler(m, info, delivery, payload, idemKey)) as Promise<Outcome>;
  }

  async #runHandler(m: JsMsg, info: MessageInfo, delivery: Delivery, payload: unknown, idemKey?: string): Promise<Outcome> {
    if (this.#stop.signal.aborted) return { kind: "defer", delayMs: 0, why: "shutdown" };
    const fn = this.fn;
    const ac = new Cancellation();
    this.#running.add(ac);
    try {
      const ctx = createContext(fn, info, this.#deps, ac, () => m.working(), delivery);
      await otelContext.with(delivery.otel, () => runHandler(fn, payload, ctx, ac));
      if (idemKey !== undefined) {
        await this.#deps.runs.markDone(fn.id, idemKey, info.msgId).catch((err) =>
          delivery.log.warn({ err: coerceError(err) }, "could not record completion"),
        );
      }
      return { kind: "ack" };
    } catch (err) {
      return this.#onError(err, info);
    } finally {
      this.#running.delete(ac);
    }
  }

  /**
   * A message delivered more often than its budget without an outcome: run it alone, counting the
   * run in KV first. A worker that dies holding it while other messages run is not proof against
   * it; a worker that dies running it alone POISON_TRIALS times is.
   */
  async #trial(m: JsMsg, info: MessageInfo, delivery: Delivery, payload: unknown): Promise<Outcome> {
    const fn = this.fn;
    // counted only once it is its turn: a message waiting behind another's run alone is not on trial
    const release = await this.#exclusive();
    try {
      let runs: number;
      try {
        runs = await this.#deps.runs.addTrial(fn.consumer, m.seq);
      } catch (err) {
        delivery.log.warn({ err: coerceError(err) }, "could not count a run alone; trying later");
        return { kind: "retry", delayMs: backoffDelay(fn.backoff, 1), error: serializeError(err) };
      }
      if (runs > POISON_TRIALS) {
        const message =
          `delivered ${info.deliveryCount} times without an outcome (maxDeliver ${fn.maxDeliver}), and ${POISON_TRIALS} runs of it alone ` +
          "ended without one too: the worker died or lost it each time, so it is probably what kills the worker";
        return { kind: "dead", reason: ErrorCode.Poison, error: { name: "HostError", code: ErrorCode.Poison, message } };
      }
      delivery.log.warn({ delivery_count: info.deliveryCount, run_alone: runs }, "past its budget without an outcome; running it alone");
      return await this.#runHandler(m, info, delivery, payload);
    } finally {
      release();
    }
  }

  /** Waits until no handler of this function runs in this worker and holds new ones back until released. */
  async #exclusive(): Promise<() => void> {
    const previous = this.#alone;
    let release!: () => void;
    this.#alone = new Promise<void>((r) => (release = r));
    await previous;
    this.#queue.pause();
    while (this.#queue.pending > 0) await new Promise<void>((r) => this.#queue.once("next", () => r()));
    return () => {
      this.#queue.start();
      release();
    };
  }

  #onError(thrown: unknown, info: MessageInfo): Outcome {
    const fn = this.fn;
    const error = serializeError(thrown);
    if (thrown instanceof ShutdownAbort) return { kind: "defer", delayMs: 0, why: "shutdown" };
    if (isStreamFull(thrown)) return { kind: "defer", delayMs: this.#deps.backpressure.options.pauseMs * 5, why: "stream full" };
    fn.stats.lastError = `${error.code}: ${error.message}`;
    if (isNonRetriable(thrown)) return { kind: "dead", reason: refusalReason(error), error };
    const verdict = classify(this.#deps.classifyError, thrown);
    if (verdict === "non-retriable") return { kind: "dead", reason: refusalReason(error), error };
    // a dependency is down: wait for it with backoff, without spending the message's attempts
    if (verdict === "transient") {
      // capped low: when the dependency is back, work should resume within seconds, not minutes
      const delayMs = Math.min(TRANSIENT_MAX_DELAY_MS, backoffDelay(fn.backoff, info.deliveryCount));
      return { kind: "defer", delayMs, why: `dependency unavailable (${error.code}: ${error.message.slice(0, 120)})` };
    }
    if (info.attempt >= fn.maxDeliver) return { kind: "dead", reason: ErrorCode.MaxDeliveries, error };
    if (isRetryAfter(thrown)) return { kind: "retry", delayMs: thrown.retryAfterMs, error };
    return { kind: "retry", delayMs: backoffDelay(fn.backoff, info.attempt), error };
  }

  async #defer(m: JsMsg, delayMs: number, why: string, log: Logger = this.#log.child({ seq: m.seq })): Promise<void> {
    this.fn.stats.deferred++;
    await this.#deps.runs.addDeferral(this.fn.consumer, m.seq).catch((err) =>
      log.warn({ err: coerceError(err) }, "could not record a deferral; it will count as an attempt"),
    );
    await this.#settleSoon(() => m.nak(delayMs));
    log.debug({ delay_ms: delayMs, why }, "deferred");
  }

  async #settle(m: JsMsg, info: MessageInfo, outcome: Outcome, deferrals: number, delivery: Delivery): Promise<void> {
    const fn = this.fn;
    const span = delivery.span;
    const cleanup = () => {
      if (deferrals > 0) this.#deps.runs.clearDeferrals(fn.consumer, m.seq).catch(() => {});
      if (info.attempt > fn.maxDeliver) this.#deps.runs.clearTrials(fn.consumer, m.seq).catch(() => {});
    };
    switch (outcome.kind) {
      case "ack":
        fn.stats.succeeded++;
        if (fn.def.doubleAck) {
          const ok = await m.ackAck().catch(() => false);
          if (!ok) delivery.log.warn({}, "double ack not confirmed; the message may be redelivered");
        } else await this.#settleSoon(() => m.ack());
        cleanup();
        endSpan(span, "ack");
        return;
      case "retry":
        fn.stats.failed++;
        await this.#settleSoon(() => m.nak(outcome.delayMs));
        delivery.log.warn({ attempt: info.attempt, delay_ms: outcome.delayMs, error: outcome.error }, "handler failed; retrying");
        endSpan(span, "nak", outcome.error);
        return;
      case "defer":
        await this.#defer(m, outcome.delayMs, outcome.why, delivery.log);
        span.setAttribute("syntropism.defer_reason", outcome.why);
        endSpan(span, "defer");
        return;
      case "dead": {
        fn.stats.failed++;
        try {
          await writeDeadLetter(this.#deps.js, this.#deps.deadLetters.prefix, {
            fn: fn.id,
            source: { subject: m.subject, data: m.data, headers: m.headers, stream: m.info.stream, seq: m.seq, msgId: info.msgId },
            reason: outcome.reason,
            attempts: info.attempt,
            error: outcome.error,
          });
        } catch (err) {
          // the dead letter could not be written: keep the message and try again later
          const delay = backoffDelay(fn.backoff, info.attempt);
          delivery.log.error({ err: coerceError(err) }, "could not write dead letter; message kept");
          await this.#settleSoon(() => m.nak(delay));
          endSpan(span, "nak", { code: outcome.error.code, message: `dead letter not written: ${(err as Error).message}` });
          return;
        }
        fn.stats.deadLettered++;
        await this.#settleSoon(() => (this.#deps.features.termReason ? m.term(outcome.reason) : m.term()));
        cleanup();
        delivery.log.warn({ reason: outcome.reason, error: outcome.error }, "dead-lettered");
        endSpan(span, "term", outcome.error);
        return;
      }
    }
  }

  /**
   * Stops pulling, lets running handlers finish within `graceMs`, then aborts them; every message
   * not finished is handed back (nak) as a deferral. Safe to call twice.
   */
  async stop(graceMs: number): Promise<void> {
    if (!this.#stop.signal.aborted) this.#stop.abort();
    this.#room?.resolve();
    try {
      await this.#drain(graceMs);
    } finally {
      clearInterval(this.#heartbeat);
    }
  }

  async #drain(graceMs: number): Promise<void> {
    await this.#loop;
    if ((await within(Promise.allSettled([...this.#held]), graceMs)) === TIMED_OUT) {
      for (const ac of this.#running) ac.abort(new ShutdownAbort());
      await within(Promise.allSettled([...this.#held]), 2000);
    }
  }
}

/**
 * The reason a message that can never succeed is dead-lettered under: the error's own code when it
 * has one (`INSUFFICIENT_FUNDS`, SQLSTATE `22021` …), so that `host dlq ls` says why; otherwise
 * HOST_ERR_NON_RETRIABLE.
 */
export function refusalReason(error: SerializedError): string {
  const code = error.code;
  return code && !code.startsWith("HOST_ERR_") ? code : ErrorCode.NonRetriable;
}
