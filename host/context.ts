import * as v from "valibot";
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { FunctionContext, MessageInfo, PublishOptions } from "./define.ts";
import { ErrorCode, type ErrorClassifier } from "./errors.ts";
import { Header } from "./headers.ts";
import { preview, type Logger } from "./log.ts";
import { asStreamFull, type Backpressure } from "./backpressure.ts";
import type { ResolvedFunction } from "./resolved.ts";
import type { Cancellation } from "./runHandler.ts";
import { Attr, endSpan, startSendSpan, traceIds } from "./tracing.ts";
import type { Context, Span } from "@opentelemetry/api";

// What a handler gets besides its payload, and the decoding that happens before it runs.

export type Decoded = { ok: true; payload: unknown } | { ok: false; code: string; message: string };

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Size check, JSON decode (empty body → undefined) and schema validation, in that order. */
/** Schema issues named in an error message; the rest are counted. */
const MAX_ISSUES = 5;

export function decodePayload(fn: ResolvedFunction, data: Uint8Array): Decoded {
  if (data.length > fn.maxPayloadBytes) {
    return { ok: false, code: ErrorCode.PayloadTooLarge, message: `payload is ${data.length} bytes; the limit is ${fn.maxPayloadBytes}` };
  }
  let payload: unknown;
  if (data.length === 0) payload = undefined;
  else {
    try {
      payload = JSON.parse(decoder.decode(data));
    } catch (err) {
      return { ok: false, code: ErrorCode.MalformedJson, message: `payload is not valid JSON: ${preview((err as Error).message)}` };
    }
  }
  const schema = fn.def.schema;
  if (!schema) return { ok: true, payload };
  const result = v.safeParse(schema, payload);
  if (!result.success) {
    // issue texts quote the value they reject: bounded, so a huge payload is not echoed whole
    const shown = result.issues.slice(0, MAX_ISSUES).map((i) => `${preview(v.getDotPath(i) ?? "(root)", 128)}: ${preview(i.message)}`);
    const more = result.issues.length > MAX_ISSUES ? `; … and ${result.issues.length - MAX_ISSUES} more` : "";
    const issues = shown.join("; ") + more;
    return { ok: false, code: ErrorCode.InvalidPayload, message: `payload does not match the schema: ${issues}` };
  }
  return { ok: true, payload: result.output };
}

export type ContextDeps = {
  nc: NatsConnection;
  js: JetStreamClient;
  kv(bucket: string): Promise<KV>;
  backpressure: Backpressure;
  log: Logger;
  /** The config's classifyError, applied to whatever a handler throws. */
  classifyError?: ErrorClassifier;
};

const encoder = new TextEncoder();
export const encodeJson = (data: unknown): Uint8Array => (data === undefined ? new Uint8Array(0) : encoder.encode(JSON.stringify(data)));

/** Headers for a message caused by `info`: correlation carried over, causation = the cause's id. */
export function causedHeaders(info: MessageInfo, extra?: Record<string, string>): MsgHdrs {
  const h = natsHeaders();
  h.set(Header.CorrelationId, info.headers[Header.CorrelationId] ?? info.msgId);
  h.set(Header.CausationId, info.msgId);
  h.set(Header.Sender, info.fn);
  for (const [k, val] of Object.entries(extra ?? {})) h.set(k, val);
  return h;
}

/** Per-message state shared by the trigger and the handler's context: span, trace context, logger. */
export class Delivery {
  readonly span: Span;
  readonly otel: Context;
  readonly #base: Logger;
  readonly #info: MessageInfo;
  #log?: Logger;

  constructor(span: Span, otel: Context, base: Logger, info: MessageInfo) {
    this.span = span;
    this.otel = otel;
    this.#base = base;
    this.#info = info;
  }

  /** Bound to function, stream sequence, msg id, correlation id and trace ids; made on first use. */
  get log(): Logger {
    return (this.#log ??= deliveryLogger(this.#base, this.#info, this.span));
  }
}

/** A logger bound to a message: function, stream sequence, msg id, correlation id, trace ids. */
export function deliveryLogger(base: Logger, info: MessageInfo, span: Span): Logger {
  return base.child({
    fn: info.fn,
    stream: info.stream,
    seq: info.seq,
    msg_id: info.msgId,
    correlation_id: info.headers[Header.CorrelationId] ?? info.msgId,
    ...traceIds(span),
  });
}

/**
 * The handler's `ctx`. A class, so a message costs one object rather than a closure per helper;
 * the helpers are bound on first access, so `const { publish } = ctx` works too.
 */
class HandlerContext implements FunctionContext {
  readonly fn: string;
  readonly subject: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly msgId: string;
  readonly stream?: string;
  readonly seq?: number;
  readonly attempt: number;
  readonly deliveryCount: number;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly #fn: ResolvedFunction;
  readonly #info: MessageInfo;
  readonly #deps: ContextDeps;
  readonly #delivery: Delivery;
  readonly #working: () => void;
  readonly #cancel: Cancellation;
  #published = 0;
  /** Resolves when this handler's latest waiting publish has been sent: the next one goes after it. */
  #sent: Promise<void> = Promise.resolve();
  /** Publishes of this handler waiting for their turn or their backpressure check. */
  #waiting = 0;
  #bound?: Pick<FunctionContext, "publish" | "broadcast" | "request" | "kv" | "working">;

  constructor(fn: ResolvedFunction, info: MessageInfo, deps: ContextDeps, cancel: Cancellation, working: () => void, delivery: Delivery) {
    this.fn = info.fn;
    this.subject = info.subject;
    this.headers = info.headers;
    this.msgId = info.msgId;
    this.stream = info.stream;
    this.seq = info.seq;
    this.attempt = info.attempt;
    this.deliveryCount = info.deliveryCount;
    this.#cancel = cancel;
    this.nc = deps.nc;
    this.js = deps.js;
    this.#fn = fn;
    this.#info = info;
    this.#deps = deps;
    this.#delivery = delivery;
    this.#working = working;
  }

  get log(): Logger {
    return this.#delivery.log;
  }

  get resources(): Record<string, unknown> {
    return this.#fn.resources;
  }

  get signal(): AbortSignal {
    return this.#cancel.signal;
  }

  get span(): Span {
    return this.#delivery.span;
  }

  get #helpers() {
    return (this.#bound ??= {
      publish: this.#publish.bind(this),
      broadcast: this.#broadcast.bind(this),
      request: this.#request.bind(this) as FunctionContext["request"],
      kv: this.#deps.kv,
      working: this.#working,
    });
  }

  get publish() {
    return this.#helpers.publish;
  }
  get broadcast() {
    return this.#helpers.broadcast;
  }
  get request() {
    return this.#helpers.request;
  }
  get kv() {
    return this.#helpers.kv;
  }
  get working() {
    return this.#helpers.working;
  }

  async #publish(subject: string, data: unknown, opts: PublishOptions = {}): Promise<PubAck> {
    const fn = this.#fn;
    const deps = this.#deps;
    // Derived ids are positional: the n-th publish of a retried handler reuses the same id, so
    // JetStream drops the repeat within the stream's duplicate window.
    const n = this.#published++;
    const msgID = opts.msgId ?? `${this.#info.msgId}:${fn.id}:${n}`;
    // Publishes of one handler reach the server in call order, pipelined. Usually the stream and
    // its depth are known and below high water: the publish is sent at once, in this call. Otherwise
    // it waits for the one before it to be sent (not acknowledged), then for its backpressure check.
    const bp = deps.backpressure;
    const now = this.#waiting === 0 ? bp.clearNow(subject) : undefined;
    const line = now ? undefined : this.#line();
    let send: ReturnType<typeof startSendSpan> | undefined;
    let stream: string | null = now?.stream ?? null;
    try {
      if (line) {
        await line.before;
        stream = await bp.streamFor(subject);
        if (stream) await bp.waitBelowHighWater(stream, Math.min(fn.timeoutMs / 2, 5000), this.signal);
      }
      if (stream) fn.outputs.add(stream);
      const h = causedHeaders(this.#info, opts.headers);
      send = startSendSpan("send", subject, this.#delivery.otel, h, { [Attr.messageId]: msgID });
      const acked = deps.js.publish(subject, encodeJson(data), { msgID, headers: h });
      line?.done();
      const ack = await acked;
      if (send.span.isRecording()) send.span.setAttribute(Attr.streamSeq, ack.seq);
      endSpan(send.span, ack.duplicate ? "nak" : "ack");
      return ack;
    } catch (err) {
      line?.done();
      const mapped = asStreamFull(err, stream);
      if (mapped !== err && stream) deps.backpressure.markFull(stream);
      if (send) endSpan(send.span, "error", { message: (mapped as Error).message, code: (mapped as { code?: string }).code });
      throw mapped;
    }
  }

  /** A place behind this handler's waiting publishes; `done` (once) lets the next one go. */
  #line(): { before: Promise<void>; done: () => void } {
    const before = this.#sent;
    let open!: () => void;
    this.#sent = new Promise<void>((r) => (open = r));
    this.#waiting++;
    let done = false;
    return {
      before,
      done: () => {
        if (done) return;
        done = true;
        this.#waiting--;
        open();
      },
    };
  }

  #broadcast(subject: string, data: unknown, opts?: { headers?: Record<string, string> }): void {
    const h = causedHeaders(this.#info, opts?.headers);
    const send = startSendSpan("send", subject, this.#delivery.otel, h);
    this.#deps.nc.publish(subject, encodeJson(data), { headers: h });
    endSpan(send.span, "ack");
  }

  async #request<T>(subject: string, data: unknown, opts?: { timeoutMs?: number }): Promise<T> {
    const h = causedHeaders(this.#info);
    const send = startSendSpan("request", subject, this.#delivery.otel, h);
    try {
      const reply = await this.#deps.nc.request(subject, encodeJson(data), { timeout: opts?.timeoutMs ?? 5000, headers: h });
      endSpan(send.span, "reply");
      return (reply.data.length ? reply.json() : undefined) as T;
    } catch (err) {
      endSpan(send.span, "error", { message: (err as Error).message });
      throw err;
    }
  }
}

export function createContext(
  fn: ResolvedFunction,
  info: MessageInfo,
  deps: ContextDeps,
  cancel: Cancellation,
  working: () => void,
  delivery: Delivery,
): FunctionContext {
  return new HandlerContext(fn, info, deps, cancel, working, delivery);
}
