import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { tracing } from "@opentelemetry/sdk-node";
import { context, trace } from "@opentelemetry/api";
import { configuredExporter, startTracing } from "../otel/tracing.ts";
import { NatsSpanExporter, spanSubject } from "../otel/natsSpanExporter.ts";
import { TraceBridge } from "../otel/bridge.ts";
import { createLogger } from "../host/log.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS, readSubject, runCli, startCli, startHost, waitFor } from "./helpers/host.ts";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "./helpers/otlp.ts";

// Traces through NATS headers, exported as OTLP protobuf to a local receiver that decodes them.

const fixtures = ["--config", FIXTURE_CONFIG, "--functions", FIXTURE_FUNCTIONS];
const KIND = { server: 2, client: 3, producer: 4, consumer: 5 };

function traceparent(): { header: string; traceId: string; spanId: string } {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { header: `00-${traceId}-${spanId}-01`, traceId, spanId };
}

const byName = (spans: ReceivedSpan[], name: string) => spans.filter((s) => s.name === name);

describe("tracing configuration", () => {
  it("is off unless an exporter is configured, and off loads no SDK", async () => {
    assert.equal(configuredExporter({}), "none");
    assert.equal(configuredExporter({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }), "otlp");
    assert.equal(configuredExporter({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://x/v1/traces" }), "otlp");
    assert.equal(configuredExporter({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x", OTEL_SDK_DISABLED: "true" }), "none");
    assert.equal(configuredExporter({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x", OTEL_TRACES_EXPORTER: "none" }), "none");
    assert.equal(configuredExporter({ OTEL_TRACES_EXPORTER: "nats" }), "nats");
    const off = await startTracing({ serviceName: "t", env: {} });
    assert.equal(off.enabled, false);
  });
});

describe("trace continuity across hops (host start, OTLP export)", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let otlp: OtlpReceiver;
  let host: ReturnType<typeof startCli>;
  before(async () => {
    nats = await startTestNats(hooks);
    otlp = await startOtlpReceiver();
    hooks.after(() => otlp.close());
    const env = {
      NATS_URL: nats.url,
      LOG_LEVEL: "info",
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint,
      OTEL_SERVICE_NAME: "fixtures-host",
      OTEL_BSP_SCHEDULE_DELAY: "100",
    };
    assert.equal((await runCli(["streams", "apply", ...fixtures], env)).code, 0);
    host = startCli(hooks, ["start", "--workers", "1", ...fixtures], env);
    await host.waitForLog("ready", (l) => l.msg === "all workers ready");
  });

  it("keeps one trace id from a request through two JetStream functions, one span per attempt, parent-linked", async () => {
    const tp = traceparent();
    const h = natsHeaders();
    h.set("traceparent", tp.header);
    const reply = await nats.nc.request("tr.entry", JSON.stringify({ id: "t1", failOnce: true }), { headers: h, timeout: 5000 });
    assert.deepEqual(reply.json(), { accepted: "t1" });

    const spans = await otlp.waitForSpans("the whole chain", (all) => {
      const mine = all.filter((s) => s.traceId === tp.traceId);
      return mine.some((s) => s.name === "send out.tr.t1") && byName(mine, "process jobs.tr.step1").length === 2;
    });
    const mine = spans.filter((s) => s.traceId === tp.traceId);
    assert.ok(otlp.contentTypes.every((c) => c === "application/x-protobuf"), `content types ${otlp.contentTypes}`);
    assert.ok(mine.every((s) => s.service === "fixtures-host"));

    const [entry] = byName(mine, "process tr.entry");
    assert.ok(entry, "no span for the request");
    assert.equal(entry.kind, KIND.server);
    assert.equal(entry.parentSpanId, tp.spanId, "the request span is not a child of the caller's context");
    assert.equal(entry.attributes["messaging.system"], "nats");
    assert.equal(entry.attributes["syntropism.function"], "tr/entry");

    const [send1] = byName(mine, "send jobs.tr.step1");
    assert.equal(send1!.kind, KIND.producer);
    assert.equal(send1!.parentSpanId, entry.spanId);

    const attempts = byName(mine, "process jobs.tr.step1").sort((a, b) => Number(a.attributes["messaging.nats.message.delivery_count"]) - Number(b.attributes["messaging.nats.message.delivery_count"]));
    assert.equal(attempts.length, 2, "one span per delivery attempt");
    for (const a of attempts) {
      assert.equal(a.kind, KIND.consumer);
      assert.equal(a.parentSpanId, send1!.spanId);
      assert.deepEqual(a.links, [{ traceId: tp.traceId, spanId: send1!.spanId }], "not linked to its producer");
      assert.equal(a.attributes["messaging.destination.name"], "jobs.tr.step1");
      assert.equal(a.attributes["messaging.consumer.group.name"], "tr_step1");
      assert.equal(a.attributes["messaging.nats.stream"], "JOBS");
      assert.ok(String(a.attributes["messaging.message.id"]).length > 0);
    }
    assert.equal(attempts[0]!.attributes["messaging.nats.message.delivery_count"], 1);
    assert.equal(attempts[0]!.attributes["syntropism.outcome"], "nak");
    assert.equal(attempts[0]!.status.code, 2, "a failed attempt's span has status ERROR");
    assert.equal(attempts[1]!.attributes["messaging.nats.message.delivery_count"], 2);
    assert.equal(attempts[1]!.attributes["syntropism.outcome"], "ack");

    const [send2] = byName(mine, "send jobs.tr.step2");
    assert.equal(send2!.parentSpanId, attempts[1]!.spanId);
    const [step2] = byName(mine, "process jobs.tr.step2");
    assert.equal(step2!.parentSpanId, send2!.spanId);
    assert.equal(step2!.attributes["syntropism.outcome"], "ack");
    const [send3] = byName(mine, "send out.tr.t1");
    assert.equal(send3!.parentSpanId, step2!.spanId);

    // the stored receipt carries the same trace, in its body and its traceparent header
    const [receipt] = await readSubject(nats.jsm, "OUT", "out.tr.t1");
    assert.equal(receipt!.json<{ trace_id: string }>().trace_id, tp.traceId);
    assert.equal(receipt!.header.get("traceparent").split("-")[1], tp.traceId);

    // and the handler's log line is enriched with the same ids; its own trace_id is kept aside
    const line = await host.waitForLog("handler log line", (l) => l.msg === "last hop reached");
    assert.equal(line.trace_id, tp.traceId);
    assert.equal(line.span_id, step2!.spanId);
    assert.equal(line.fn, "tr/step2");
    assert.equal(line.stream, "JOBS");
    assert.equal(typeof line.seq, "number");
    assert.ok(String(line.msg_id).length > 0);
    assert.ok(String(line.correlation_id).length > 0);
    assert.deepEqual(line.fields, { trace_id: "forged-by-handler" });
    assert.equal(line.step, 2);
  });

  it("starts a new trace for a message that carries none (plain `nats pub`)", async () => {
    await nats.js.publish("jobs.tr.step2", JSON.stringify({ id: "plain" }));
    const spans = await otlp.waitForSpans("a span for the plain message", (all) => all.some((s) => s.name === "send out.tr.plain"));
    const send = spans.find((s) => s.name === "send out.tr.plain")!;
    const process = spans.find((s) => s.spanId === send.parentSpanId)!;
    assert.equal(process.name, "process jobs.tr.step2");
    assert.equal(process.parentSpanId, "", "a message without traceparent should start a root span");
    assert.deepEqual(process.links, []);
  });
});

describe("tracing off: context still carried", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  before(async () => {
    nats = await startTestNats(hooks);
  });

  it("passes traceparent from a delivery to what its handler publishes, and logs carry the ids", async () => {
    const lines: string[] = [];
    await startHost(hooks, nats, { log: createLogger({ level: "info", sink: (l) => lines.push(l) }) });
    const tp = traceparent();
    const h = natsHeaders();
    h.set("traceparent", tp.header);
    await nats.js.publish("jobs.tr.step2", JSON.stringify({ id: "off1" }), { headers: h });
    const [receipt] = await waitFor("receipt", async () => {
      const r = await readSubject(nats.jsm, "OUT", "out.tr.off1");
      return r.length ? r : undefined;
    });
    assert.equal(receipt!.header.get("traceparent").split("-")[1], tp.traceId);
    const log = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === "last hop reached")!;
    assert.equal(log.trace_id, tp.traceId);
    assert.equal(log.fn, "tr/step2");
  });
});

describe("trace.> bridge", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  before(async () => {
    nats = await startTestNats(hooks);
  });

  it("carries spans published on NATS to an OTLP endpoint", async () => {
    const otlp = await startOtlpReceiver();
    hooks.after(() => otlp.close());
    const bridgeNc = await (await import("@nats-io/transport-node")).connect({ servers: nats.url });
    hooks.after(() => bridgeNc.close());
    const bridge = new TraceBridge({ nc: bridgeNc, url: `${otlp.endpoint}/v1/traces`, batchMs: 50, log: createLogger({ level: "error" }) });
    bridge.start();
    await bridgeNc.flush();

    // an agent-side SDK whose only way out is NATS
    const seen: string[] = [];
    const spy = nats.nc.subscribe("trace.>", {
      callback: (_e, m) => {
        seen.push(m.subject);
      },
    });
    await nats.nc.flush();
    const provider = new tracing.BasicTracerProvider({
      spanProcessors: [new tracing.SimpleSpanProcessor(new NatsSpanExporter(nats.nc, { domain: "agent", entity: "genesis_001" }))],
    });
    const tracer = provider.getTracer("agent");
    const parent = tracer.startSpan("cognitive_cycle");
    const child = tracer.startSpan("llm.invoke", {}, trace.setSpan(context.active(), parent));
    child.end();
    parent.end();
    await provider.forceFlush();

    const spans = await otlp.waitForSpans("bridged spans", (all) => all.length >= 2);
    const p = spans.find((s) => s.name === "cognitive_cycle")!;
    const c = spans.find((s) => s.name === "llm.invoke")!;
    assert.equal(c.traceId, p.traceId);
    assert.equal(c.parentSpanId, p.spanId);
    assert.equal(p.traceId, parent.spanContext().traceId);
    assert.ok(seen.every((s) => s === spanSubject("agent", "genesis_001")), `subjects ${seen.join(",")}`);
    assert.equal(seen[0], "trace.agent.genesis_001.span_completed");
    spy.unsubscribe();
    await bridge.stop();
    assert.equal(bridge.stats.forwarded, 2);
    assert.equal(bridge.stats.dropped, 0);
    await provider.shutdown();
  });
});
