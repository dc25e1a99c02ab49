import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import type { tracing } from "@opentelemetry/sdk-node";

// A span exporter for components that may reach only NATS (sandboxed agents): each finished span is
// published as an OTLP protobuf ExportTraceServiceRequest on
// `trace.{domain}.{entity}.span_completed`; the bridge (otel/bridge.ts) forwards them as OTLP.

export const SPAN_CONTENT_TYPE = "application/x-protobuf";

/** A subject token: anything outside [A-Za-z0-9_-] becomes `_`. */
export function subjectToken(raw: string): string {
  const t = raw.replace(/[^A-Za-z0-9_-]/g, "_");
  return t.length ? t : "_";
}

export function spanSubject(domain: string, entity: string): string {
  return `trace.${subjectToken(domain)}.${subjectToken(entity)}.span_completed`;
}

export class NatsSpanExporter implements tracing.SpanExporter {
  readonly #nc: NatsConnection;
  readonly #subject: string;

  constructor(nc: NatsConnection, opts: { domain: string; entity: string }) {
    this.#nc = nc;
    this.#subject = spanSubject(opts.domain, opts.entity);
  }

  export(spans: tracing.ReadableSpan[], done: (result: ExportResult) => void): void {
    try {
      for (const span of spans) {
        const body = ProtobufTraceSerializer.serializeRequest([span]);
        if (!body) continue;
        const h = natsHeaders();
        h.set("Content-Type", SPAN_CONTENT_TYPE);
        this.#nc.publish(this.#subject, body, { headers: h });
      }
      done({ code: ExportResultCode.SUCCESS });
    } catch (err) {
      done({ code: ExportResultCode.FAILED, error: err as Error });
    }
  }

  async forceFlush(): Promise<void> {
    if (!this.#nc.isClosed()) await this.#nc.flush();
  }

  shutdown(): Promise<void> {
    return this.forceFlush();
  }
}
