import { setTimeout as sleep } from "node:timers/promises";
import { otelEnvironment } from "../config/settings.ts";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "../host/log.ts";
import { SPAN_CONTENT_TYPE } from "./natsSpanExporter.ts";

// The trace.> bridge: spans published on NATS by components that cannot reach a collector are
// forwarded to an OTLP/HTTP endpoint. Each message is one protobuf ExportTraceServiceRequest; a
// batch is their concatenation, which protobuf decodes as one request holding every span
// (repeated fields of concatenated messages merge). Several bridges share the load in a queue group.

export type BridgeOptions = {
  nc: NatsConnection;
  /** OTLP traces URL, e.g. http://127.0.0.1:4318/v1/traces. */
  url: string;
  subject?: string;
  queue?: string;
  /** Longest a span waits before its batch is sent. */
  batchMs?: number;
  maxBatch?: number;
  /** Attempts per batch before it is dropped (with a log line). */
  attempts?: number;
  log: Logger;
};

export type BridgeStats = { received: number; forwarded: number; dropped: number; batches: number };

/** The traces URL from the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or the base endpoint + /v1/traces. */
export function otlpTracesUrl(env: Readonly<Record<string, string | undefined>> = otelEnvironment()): string | undefined {
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (env.OTEL_EXPORTER_OTLP_ENDPOINT) return `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, "")}/v1/traces`;
  return undefined;
}

export class TraceBridge {
  readonly stats: BridgeStats = { received: 0, forwarded: 0, dropped: 0, batches: 0 };
  readonly #opts: Required<Omit<BridgeOptions, "log" | "nc">> & Pick<BridgeOptions, "log" | "nc">;
  #sub?: Subscription;
  #pending: Uint8Array[] = [];
  #timer?: NodeJS.Timeout;
  #sending: Promise<void> = Promise.resolve();

  constructor(opts: BridgeOptions) {
    this.#opts = { subject: "trace.>", queue: "trace-bridge", batchMs: 200, maxBatch: 512, attempts: 5, ...opts };
  }

  start(): void {
    this.#sub = this.#opts.nc.subscribe(this.#opts.subject, {
      queue: this.#opts.queue,
      callback: (err, msg) => {
        if (err) return;
        // only OTLP protobuf bodies: span_started notices and other JSON on trace.> are not spans
        const type = msg.headers?.get("Content-Type");
        if (type && type !== SPAN_CONTENT_TYPE) return;
        if (!msg.subject.endsWith(".span_completed") || msg.data.length === 0) return;
        this.stats.received++;
        this.#pending.push(msg.data);
        if (this.#pending.length >= this.#opts.maxBatch) this.#flushSoon(0);
        else this.#flushSoon(this.#opts.batchMs);
      },
    });
  }

  #flushSoon(ms: number): void {
    if (this.#timer && ms > 0) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#sending = this.#sending.then(() => this.#flush());
    }, ms);
  }

  async #flush(): Promise<void> {
    const batch = this.#pending.splice(0);
    if (!batch.length) return;
    const body = Buffer.concat(batch);
    for (let attempt = 1; attempt <= this.#opts.attempts; attempt++) {
      try {
        const res = await fetch(this.#opts.url, { method: "POST", headers: { "Content-Type": SPAN_CONTENT_TYPE }, body });
        if (res.ok) {
          this.stats.forwarded += batch.length;
          this.stats.batches++;
          return;
        }
        // 4xx other than 429: the collector will never take this batch
        if (res.status < 500 && res.status !== 429) {
          this.#opts.log.warn({ status: res.status, spans: batch.length }, "OTLP endpoint refused a batch; dropped");
          break;
        }
      } catch (err) {
        if (attempt === this.#opts.attempts) this.#opts.log.warn({ err: (err as Error).message }, "OTLP endpoint unreachable");
      }
      await sleep(Math.min(5000, 200 * 2 ** (attempt - 1)));
    }
    this.stats.dropped += batch.length;
  }

  /** Stops taking spans and sends what is pending. */
  async stop(): Promise<void> {
    if (this.#sub && !this.#sub.isClosed()) await this.#sub.drain().catch(() => this.#sub?.unsubscribe());
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#sending = this.#sending.then(() => this.#flush());
    await this.#sending;
  }
}
