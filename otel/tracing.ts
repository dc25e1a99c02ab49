import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, HostError } from "../host/errors.ts";
import { otelEnvironment } from "../config/settings.ts";

// Tracing bootstrap for every process of the project (host workers, dev stack, bridges, agents).
// Configured only by the standard OTEL_* variables. Off unless an exporter is configured, and then
// it costs nothing: the SDK is not even imported, and the host's spans are the API's non-recording
// ones (trace context is still carried through message headers).

export type Tracing = {
  enabled: boolean;
  exporter: "otlp" | "console" | "nats" | "none";
  /** Flushes pending spans and stops the SDK. */
  shutdown(): Promise<void>;
};

export type TracingOptions = {
  /** Default service.name when OTEL_SERVICE_NAME is not set. */
  serviceName: string;
  /** Needed for OTEL_TRACES_EXPORTER=nats: where spans go, and the `trace.{domain}.{entity}` they go under. */
  nats?: { nc: NatsConnection; domain: string; entity: string };
  env?: Readonly<Record<string, string | undefined>>;
};

/** Which exporter the environment asks for. */
export function configuredExporter(env: Readonly<Record<string, string | undefined>> = otelEnvironment()): Tracing["exporter"] {
  if ((env.OTEL_SDK_DISABLED ?? "").toLowerCase() === "true") return "none";
  const named = (env.OTEL_TRACES_EXPORTER ?? "").split(",")[0]!.trim().toLowerCase();
  if (named === "none") return "none";
  if (named === "console" || named === "nats" || named === "otlp") return named;
  return env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ? "otlp" : "none";
}

export async function startTracing(opts: TracingOptions): Promise<Tracing> {
  const env = opts.env ?? otelEnvironment();
  const exporter = configuredExporter(env);
  if (exporter === "none") return { enabled: false, exporter, shutdown: async () => {} };

  const { NodeSDK, tracing } = await import("@opentelemetry/sdk-node");
  let spanExporter;
  if (exporter === "otlp") {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
    spanExporter = new OTLPTraceExporter();
  } else if (exporter === "console") {
    spanExporter = new tracing.ConsoleSpanExporter();
  } else {
    if (!opts.nats) throw new HostError(ErrorCode.Config, "OTEL_TRACES_EXPORTER=nats needs a NATS connection (startTracing({ nats }))");
    const { NatsSpanExporter } = await import("./natsSpanExporter.ts");
    spanExporter = new NatsSpanExporter(opts.nats.nc, opts.nats);
  }
  const sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME || opts.serviceName,
    spanProcessors: [new tracing.BatchSpanProcessor(spanExporter)],
    // the host instruments NATS itself; no automatic instrumentation of other libraries
    instrumentations: [],
  });
  sdk.start();
  let stopped: Promise<void> | undefined;
  return { enabled: true, exporter, shutdown: () => (stopped ??= sdk.shutdown().catch(() => {})) };
}
