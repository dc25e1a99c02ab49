import {
  INVALID_SPAN_CONTEXT,
  context as otelContext,
  propagation,
  trace,
  SpanKind,
  SpanStatusCode,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { Match, type MsgHdrs } from "@nats-io/transport-node";

// W3C trace context through NATS headers, and the host's spans. The host uses only the
// OpenTelemetry API: with no SDK registered (tracing off) spans are non-recording and cost little,
// yet `traceparent` is still carried from each message to what its handler sends, so a trace stays
// whole across hosts that do export.

const TRACER = "syntropism-host";

/** Attribute names beyond the messaging semantic conventions (no NATS conventions exist yet). */
export const Attr = {
  system: "messaging.system",
  destination: "messaging.destination.name",
  operationType: "messaging.operation.type",
  operationName: "messaging.operation.name",
  messageId: "messaging.message.id",
  consumerGroup: "messaging.consumer.group.name",
  subscription: "messaging.destination.subscription.name",
  bodySize: "messaging.message.body.size",
  deliveryCount: "messaging.nats.message.delivery_count",
  stream: "messaging.nats.stream",
  streamSeq: "messaging.nats.stream_sequence",
  fn: "syntropism.function",
  attempt: "syntropism.attempt",
  outcome: "syntropism.outcome",
  correlationId: "syntropism.correlation_id",
} as const;

export type Outcome = "ack" | "nak" | "term" | "defer" | "reply" | "error";

const getter: TextMapGetter<MsgHdrs | undefined> = {
  keys: (h) => (h ? [...h.keys()] : []),
  get: (h, key) => {
    if (!h) return undefined;
    const v = h.get(key) || h.get(key, Match.IgnoreCase);
    return v || undefined;
  },
};

const setter: TextMapSetter<MsgHdrs> = {
  set: (h, key, value) => h.set(key, value),
};

const NOOP_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
let propagatorChecked = false;
let recording = false;

/**
 * Whether an SDK records spans. Probed with a span that is never ended (so never exported); when
 * nothing records, the host skips span work and only carries the incoming context along.
 */
export function refreshTracingActive(): boolean {
  recording = tracer().startSpan("syntropism.probe").isRecording();
  return recording;
}

export function tracingActive(): boolean {
  return recording;
}

/** Installs the W3C propagator unless an SDK already registered one. */
export function ensurePropagator(): void {
  refreshTracingActive();
  if (propagatorChecked) return;
  propagatorChecked = true;
  if (propagation.fields().length === 0) propagation.setGlobalPropagator(new W3CTraceContextPropagator());
}

export function tracer() {
  return trace.getTracer(TRACER);
}

/** The producer's context from a message's headers (ROOT when there is none). */
export function extractContext(h: MsgHdrs | undefined): Context {
  return propagation.extract(otelContext.active(), h, getter);
}

export function injectContext(ctx: Context, h: MsgHdrs): void {
  propagation.inject(ctx, h, setter);
}

/**
 * A span for one delivery attempt (or one request), child of the producer's context and linked to
 * it, so the trace runs end to end and each attempt is its own span.
 */
export function startDeliverySpan(kind: "process" | "request", subject: string, parent: Context, attrs: () => Attributes): Span {
  const producer = trace.getSpanContext(parent);
  if (!recording) return trace.wrapSpanContext(producer ?? INVALID_SPAN_CONTEXT);
  return tracer().startSpan(
    `process ${subject}`,
    {
      kind: kind === "request" ? SpanKind.SERVER : SpanKind.CONSUMER,
      attributes: { [Attr.system]: "nats", [Attr.destination]: subject, [Attr.operationType]: "process", [Attr.operationName]: kind, ...attrs() },
      links: producer ? [{ context: producer }] : [],
    },
    parent,
  );
}

/** A producer (publish) or client (request) span under `parent`, whose context goes into `h`. */
export function startSendSpan(kind: "send" | "request", subject: string, parent: Context, h: MsgHdrs, attrs: Attributes = {}): { span: Span; ctx: Context } {
  if (!recording) {
    // nothing records: pass the incoming context straight on
    injectContext(parent, h);
    return { span: NOOP_SPAN, ctx: parent };
  }
  const span = tracer().startSpan(
    `${kind} ${subject}`,
    {
      kind: kind === "request" ? SpanKind.CLIENT : SpanKind.PRODUCER,
      attributes: { [Attr.system]: "nats", [Attr.destination]: subject, [Attr.operationType]: "send", [Attr.operationName]: kind === "request" ? "request" : "publish", ...attrs },
    },
    parent,
  );
  const ctx = trace.setSpan(parent, span);
  injectContext(ctx, h);
  return { span, ctx };
}

export function endSpan(span: Span, outcome: Outcome, error?: { code?: string; message: string }): void {
  if (!span.isRecording()) return;
  span.setAttribute(Attr.outcome, outcome);
  if (error) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.code ? `${error.code}: ${error.message}` : error.message });
    span.setAttribute("error.type", error.code ?? "error");
  }
  span.end();
}

/** trace_id and span_id of a span, for logs; empty when the context is invalid. */
export function traceIds(span: Span): { trace_id?: string; span_id?: string } {
  const sc = span.spanContext();
  if (!trace.isSpanContextValid(sc)) return {};
  return { trace_id: sc.traceId, span_id: sc.spanId };
}

export { otelContext, trace };
