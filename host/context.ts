import * as v from "valibot";
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { FunctionContext, MessageInfo, PublishOptions } from "./define.ts";
import { ErrorCode } from "./errors.ts";
import { Header } from "./headers.ts";
import type { Logger } from "./log.ts";
import { asStreamFull, type Backpressure } from "./backpressure.ts";
import type { ResolvedFunction } from "./resolved.ts";
import { Attr, endSpan, startSendSpan, traceIds } from "./tracing.ts";
import type { Context, Span } from "@opentelemetry/api";

// What a handler gets besides its payload, and the decoding that happens before it runs.

export type Decoded = { ok: true; payload: unknown } | { ok: false; code: string; message: string };

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Size check, JSON decode (empty body → undefined) and schema validation, in that order. */
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
      return { ok: false, code: ErrorCode.MalformedJson, message: `payload is not valid JSON: ${(err as Error).message}` };
    }
  }
  const schema = fn.def.schema;
  if (!schema) return { ok: true, payload };
  const result = v.safeParse(schema, payload);
  if (!result.success) {
    const issues = result.issues.map((i) => `${v.getDotPath(i) ?? "(root)"}: ${i.message}`).join("; ");
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

/** The per-message tracing state a context is built on. */
export type Delivery = { span: Span; otel: Context; log: Logger };

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

export function createContext(
  fn: ResolvedFunction,
  info: MessageInfo,
  deps: ContextDeps,
  signal: AbortSignal,
  working: () => void,
  delivery: Delivery,
): FunctionContext {
  let published = 0;
  const { log, span } = delivery;

  const publish = async (subject: string, data: unknown, opts: PublishOptions = {}): Promise<PubAck> => {
    // Derived ids are positional: the n-th publish of a retried handler reuses the same id, so
    // JetStream drops the repeat within the stream's duplicate window.
    const n = published++;
    const msgID = opts.msgId ?? `${info.msgId}:${fn.id}:${n}`;
    const bp = deps.backpressure;
    const stream = await bp.streamFor(subject);
    if (stream) {
      fn.outputs.add(stream);
      await bp.waitBelowHighWater(stream, Math.min(fn.timeoutMs / 2, 5000), signal);
    }
    const h = causedHeaders(info, opts.headers);
    const send = startSendSpan("send", subject, delivery.otel, h, { [Attr.messageId]: msgID });
    try {
      const ack = await deps.js.publish(subject, encodeJson(data), { msgID, headers: h });
      send.span.setAttribute(Attr.streamSeq, ack.seq);
      endSpan(send.span, ack.duplicate ? "nak" : "ack");
      return ack;
    } catch (err) {
      const mapped = asStreamFull(err, stream);
      if (mapped !== err && stream) bp.markFull(stream);
      endSpan(send.span, "error", { message: (mapped as Error).message, code: (mapped as { code?: string }).code });
      throw mapped;
    }
  };

  return {
    ...info,
    signal,
    log,
    span,
    nc: deps.nc,
    js: deps.js,
    kv: deps.kv,
    publish,
    broadcast(subject, data, opts) {
      const h = causedHeaders(info, opts?.headers);
      const send = startSendSpan("send", subject, delivery.otel, h);
      deps.nc.publish(subject, encodeJson(data), { headers: h });
      endSpan(send.span, "ack");
    },
    async request<T>(subject: string, data: unknown, opts?: { timeoutMs?: number }) {
      const h = causedHeaders(info);
      const send = startSendSpan("request", subject, delivery.otel, h);
      try {
        const reply = await deps.nc.request(subject, encodeJson(data), { timeout: opts?.timeoutMs ?? 5000, headers: h });
        endSpan(send.span, "reply");
        return (reply.data.length ? reply.json() : undefined) as T;
      } catch (err) {
        endSpan(send.span, "error", { message: (err as Error).message });
        throw err;
      }
    },
    working,
  };
}
