import PQueue from "p-queue";
import { headers as natsHeaders, nuid, type Msg, type Subscription } from "@nats-io/transport-node";
import type { MessageInfo } from "./define.ts";
import { createContext, decodePayload, Delivery, encodeJson, type ContextDeps } from "./context.ts";
import { Attr, endSpan, extractContext, otelContext, startDeliverySpan, trace } from "./tracing.ts";
import { ErrorCode, classify, coerceError, isNonRetriable, serializeError, type SerializedError } from "./errors.ts";
import { Header, headerRecord } from "./headers.ts";
import { loopDegraded, loopRunning, recordRun, type ResolvedFunction } from "./resolved.ts";
import type { Logger } from "./log.ts";
import { Cancellation, runHandler, ShutdownAbort, TIMED_OUT, within } from "./runHandler.ts";

// Core request-reply in a queue group: every worker subscribes, the server picks one per request.
// The reply is the handler's result as JSON; a failure replies `{ "error": { name, code, message } }`
// with the micro-protocol headers `Nats-Service-Error` and `Nats-Service-Error-Code`.

const CLIENT_ERRORS = new Set<string>([ErrorCode.MalformedJson, ErrorCode.InvalidPayload, ErrorCode.PayloadTooLarge]);

/**
 * Requests are answered only on inboxes. A request's reply subject is whatever the caller wrote; a
 * caller who may not publish on `$JS.API.STREAM.DELETE.AUDIT` could otherwise have the host (which
 * may) publish its answer there. NATS clients' requests reply to `_INBOX.…`; a request that came
 * from another account through a service import has its reply mapped by the server to `_R_.…`,
 * which routes back to the caller's account only.
 */
export const REPLY_PREFIXES = ["_INBOX.", "_R_."] as const;

export class RequestTrigger {
  readonly fn: ResolvedFunction;
  readonly #deps: ContextDeps;
  readonly #queue: PQueue;
  readonly #running = new Set<Cancellation>();
  #sub?: Subscription;
  #stopping = false;
  #retry?: NodeJS.Timeout;

  constructor(fn: ResolvedFunction, deps: ContextDeps) {
    this.fn = fn;
    this.#deps = deps;
    this.#queue = new PQueue({ concurrency: fn.concurrency });
  }

  get inFlight(): number {
    return this.#queue.size + this.#queue.pending;
  }

  get #queueGroup(): string {
    return (this.fn.trigger as { queue?: string }).queue ?? this.fn.consumer;
  }

  start(): void {
    this.#subscribe();
  }

  /**
   * Subscribes in the queue group. nats.js re-subscribes by itself across reconnects; a subscription
   * that closes anyway (the server refused it, the connection was closed) marks the function
   * degraded and is made again with backoff until it holds.
   */
  #subscribe(failures = 0): void {
    if (this.#stopping) return;
    const t = this.fn.trigger as { subject: string };
    const log = this.#deps.log.child({ fn: this.fn.id });
    let sub: Subscription;
    try {
      sub = this.#deps.nc.subscribe(t.subject, {
        queue: this.#queueGroup,
        callback: (err, msg) => {
          if (err) {
            loopDegraded(this.fn.stats, `${(err as { code?: unknown }).code ?? err.name}: ${err.message}`);
            log.error({ err }, "subscription error");
            return;
          }
          void this.#queue.add(() => this.#handle(msg));
        },
      });
    } catch (err) {
      this.#resubscribe(err, failures + 1, log);
      return;
    }
    this.#sub = sub;
    if (failures > 0 && loopRunning(this.fn.stats)) log.info({ recoveries: this.fn.stats.loop.recoveries }, "subscription recovered");
    void sub.closed.then(
      () => this.#stopping || this.#resubscribe(new Error("subscription closed"), 1, log),
      (err) => this.#stopping || this.#resubscribe(err, 1, log),
    );
  }

  #resubscribe(thrown: unknown, failures: number, log: Logger): void {
    const err = coerceError(thrown);
    loopDegraded(this.fn.stats, `${(err as { code?: unknown }).code ?? err.name}: ${err.message}`);
    const wait = Math.min(5000, 100 * 2 ** Math.min(failures - 1, 10));
    (failures === 1 ? log.warn : log.debug)({ err, failures, retry_in_ms: wait }, "subscription lost; subscribing again");
    this.#retry = setTimeout(() => this.#subscribe(failures), wait);
  }

  async #handle(msg: Msg): Promise<void> {
    const fn = this.fn;
    fn.stats.received++;
    if (msg.reply && !REPLY_PREFIXES.some((p) => msg.reply!.startsWith(p))) {
      // the reply would be published with the host's rights, wherever the caller pointed it
      fn.stats.failed++;
      fn.stats.lastError = `${ErrorCode.ReplySubject}: reply subject ${msg.reply} is not an inbox`;
      this.#deps.log.warn({ fn: fn.id, subject: msg.subject, reply: msg.reply.slice(0, 200) }, "request refused: its reply subject is not an inbox (_INBOX.…), so answering it would publish on a subject the caller chose with the host's permissions");
      return;
    }
    const started = process.hrtime.bigint();
    const headers = headerRecord(msg.headers);
    const info: MessageInfo = {
      fn: fn.id,
      subject: msg.subject,
      headers,
      msgId: headers[Header.MsgId] || nuid.next(),
      attempt: 1,
      deliveryCount: 1,
    };
    const parent = extractContext(msg.headers);
    const span = startDeliverySpan("request", msg.subject, parent, () => ({
      [Attr.messageId]: info.msgId,
      [Attr.consumerGroup]: this.#queueGroup,
      [Attr.bodySize]: msg.data.length,
      [Attr.fn]: fn.id,
      [Attr.correlationId]: headers[Header.CorrelationId] ?? info.msgId,
    }));
    const delivery = new Delivery(span, trace.setSpan(parent, span), this.#deps.log, info);
    try {
      const decoded = decodePayload(fn, msg.data);
      if (!decoded.ok) {
        const error = { name: "HostError", code: decoded.code, message: decoded.message };
        this.#fail(msg, error);
        endSpan(span, "error", error);
        return;
      }
      const ac = new Cancellation();
      this.#running.add(ac);
      try {
        const ctx = createContext(fn, info, this.#deps, ac, () => {}, delivery);
        const result = await otelContext.with(delivery.otel, () => runHandler(fn, decoded.payload, ctx, ac));
        fn.stats.succeeded++;
        if (msg.reply) msg.respond(encodeJson(result ?? null));
        endSpan(span, "reply");
      } catch (err) {
        const e = serializeError(err);
        if (err instanceof ShutdownAbort) e.code = ErrorCode.Timeout;
        const refused = isNonRetriable(err) || classify(this.#deps.classifyError, err) === "non-retriable";
        if (!refused) delivery.log.warn({ error: e }, "request handler failed");
        this.#fail(msg, e, refused);
        endSpan(span, "error", e);
      } finally {
        this.#running.delete(ac);
      }
    } catch (err) {
      delivery.log.error({ err: coerceError(err) }, "could not answer request");
      if (span.isRecording()) endSpan(span, "error", { message: (err as Error).message });
    } finally {
      recordRun(fn.stats, started);
    }
  }

  /** `refused`: a NonRetriableError — the request can never succeed, so it is the caller's to fix (400). */
  #fail(msg: Msg, error: SerializedError, refused = false): void {
    this.fn.stats.failed++;
    this.fn.stats.lastError = `${error.code}: ${error.message}`;
    if (!msg.reply) return;
    const h = natsHeaders();
    h.set("Nats-Service-Error", error.message.replace(/[\r\n]+/g, " ").slice(0, 1000));
    h.set("Nats-Service-Error-Code", refused || CLIENT_ERRORS.has(error.code) ? "400" : "500");
    msg.respond(encodeJson({ error }), { headers: h });
  }

  /** Stops taking requests; in-flight ones finish within graceMs, then are aborted. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#retry);
    this.fn.stats.loop.state = "stopped";
    if (this.#sub && !this.#sub.isClosed()) await this.#sub.drain().catch(() => this.#sub?.unsubscribe());
    if ((await within(this.#queue.onIdle(), graceMs)) === TIMED_OUT) {
      for (const ac of this.#running) ac.abort(new ShutdownAbort());
      await within(this.#queue.onIdle(), 2000);
    }
  }
}
