import { createServer, type Server } from "node:http";
import protobuf from "protobufjs";
import { waitFor } from "./host.ts";

// A local OTLP/HTTP receiver: accepts POST /v1/traces with a protobuf body, decodes it with the
// OTLP trace schema (the subset of opentelemetry/proto/trace/v1 and collector/trace/v1 the tests
// read) and keeps every span. The field numbers are those of the OTLP protocol.

const PROTO = `
syntax = "proto3";
package otlp;
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
  string name = 5; int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10;
  repeated Link links = 13; Status status = 15; fixed32 flags = 16;
}
message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; }
message Status { string message = 2; int32 code = 3; }
message KeyValue { string key = 1; AnyValue value = 2; }
message AnyValue {
  oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; ArrayValue array_value = 5; bytes bytes_value = 7; }
}
message ArrayValue { repeated AnyValue values = 1; }
`;

const Request = protobuf.parse(PROTO).root.lookupType("otlp.ExportTraceServiceRequest");

export type ReceivedSpan = {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** 1 internal, 2 server, 3 client, 4 producer, 5 consumer */
  kind: number;
  attributes: Record<string, string | number | boolean>;
  links: { traceId: string; spanId: string }[];
  status: { code: number; message: string };
  service: string;
};

const hex = (b: Uint8Array | undefined) => Buffer.from(b ?? []).toString("hex");

type AnyValue = { stringValue?: string; boolValue?: boolean; intValue?: { toString(): string } | number; doubleValue?: number };
type KeyValue = { key: string; value?: AnyValue };

function attrs(kvs: KeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of kvs ?? []) {
    const v = kv.value ?? {};
    if (v.stringValue !== undefined) out[kv.key] = v.stringValue;
    else if (v.boolValue !== undefined) out[kv.key] = v.boolValue;
    else if (v.intValue !== undefined) out[kv.key] = Number(v.intValue.toString());
    else if (v.doubleValue !== undefined) out[kv.key] = v.doubleValue;
  }
  return out;
}

/** Decodes an OTLP protobuf ExportTraceServiceRequest body into spans. */
export function decodeTraces(body: Uint8Array): ReceivedSpan[] {
  const req = Request.toObject(Request.decode(body), { defaults: false }) as {
    resourceSpans?: { resource?: { attributes?: KeyValue[] }; scopeSpans?: { spans?: Record<string, unknown>[] }[] }[];
  };
  const spans: ReceivedSpan[] = [];
  for (const rs of req.resourceSpans ?? []) {
    const service = String(attrs(rs.resource?.attributes)["service.name"] ?? "");
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        const links = (s.links as { traceId?: Uint8Array; spanId?: Uint8Array }[] | undefined) ?? [];
        const status = (s.status as { code?: number; message?: string } | undefined) ?? {};
        spans.push({
          traceId: hex(s.traceId as Uint8Array),
          spanId: hex(s.spanId as Uint8Array),
          parentSpanId: hex(s.parentSpanId as Uint8Array),
          name: String(s.name ?? ""),
          kind: Number(s.kind ?? 0),
          attributes: attrs(s.attributes as KeyValue[]),
          links: links.map((l) => ({ traceId: hex(l.traceId), spanId: hex(l.spanId) })),
          status: { code: status.code ?? 0, message: status.message ?? "" },
          service,
        });
      }
    }
  }
  return spans;
}

export type OtlpReceiver = {
  endpoint: string;
  spans: ReceivedSpan[];
  requests: number;
  contentTypes: string[];
  waitForSpans(what: string, pred: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
};

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const state = { spans: [] as ReceivedSpan[], requests: 0, contentTypes: [] as string[] };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      state.requests++;
      state.contentTypes.push(String(req.headers["content-type"]));
      try {
        state.spans.push(...decodeTraces(Buffer.concat(chunks)));
        res.writeHead(200, { "Content-Type": "application/x-protobuf" }).end();
      } catch (err) {
        res.writeHead(400).end(String(err));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const addr = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${addr.port}`,
    get spans() {
      return state.spans;
    },
    get requests() {
      return state.requests;
    },
    get contentTypes() {
      return state.contentTypes;
    },
    waitForSpans: (what, pred, timeoutMs = 20_000) => waitFor(what, () => (pred(state.spans) ? state.spans : undefined), timeoutMs),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
