import { join } from "node:path";
import { createLogger } from "../host/log.ts";
import { Host } from "../host/runtime.ts";
import { cpuMs, descendants } from "./cpu.ts";
import { BENCH_DIR, log, ratio, startBenchServer, verdictOf, type BenchResult, type BenchServer } from "./lib.ts";
import type { Options } from "./options.ts";
import { startHostProcess, startRawWorker } from "./procs.ts";
import { addRawConsumer, benchConfig, freshStream, measureDrain, publishMany, type DrainResult } from "./streams.ts";

// Drain rate of a work queue: N small JSON messages are published into a fresh BENCH_WORK stream,
// then one consumer variant drains them — raw nats.js consume() + ack() in its own process, the
// host in this process (`inprocess`), or `host start --workers N` (bench/functions/noop.ts) — and
// the stream is polled until empty. Every variant drains the same N on a freshly created stream.

const STREAM = "BENCH_WORK";
const SUBJECT = "bench.work";

type Variant = { variant: string } & DrainResult;

type Stopper = { stop(): Promise<void>; pid?: number };

async function startConsumer(server: BenchServer, variant: string, o: Options): Promise<Stopper> {
  if (variant === "raw") {
    await addRawConsumer(server.jsm, STREAM, SUBJECT, "raw_work");
    return startRawWorker(server.url, ["consume", STREAM, "raw_work", String(o.maxMessages)], { profileDir: o.profile, label: "throughput-raw" });
  }
  if (variant === "inprocess") {
    const host = new Host({
      servers: server.url,
      functionsDir: join(BENCH_DIR, "functions"),
      config: await benchConfig(),
      onDrift: "apply",
      graceMs: 2000,
      log: createLogger({ level: "warn" }),
      name: "bench-inprocess",
    });
    await host.start();
    // in-process: the CPU figure includes this process's polling
    return { stop: () => host.stop(), pid: process.pid };
  }
  const workers = Number(variant.slice("workers".length));
  return startHostProcess({ url: server.url, workers, profileDir: o.profile, label: `throughput-${variant}` });
}

const label = (v: string) => (v === "raw" ? "raw consume()" : v === "inprocess" ? "host in-process" : `host --workers ${v.slice(7)}`);

export async function throughput(o: Options): Promise<BenchResult> {
  const server = await startBenchServer("throughput");
  const config = await benchConfig();
  const results: Variant[] = [];
  try {
    for (const variant of o.variants) {
      await freshStream(server.nc, server.jsm, config, STREAM);
      await publishMany(server.js, SUBJECT, o.messages, o.msgSize);
      // polling starts before the consumer does, so the first poll that sees progress is within
      // one poll interval of the first ack
      let pids: number[] | undefined;
      const cpu = () => ({ consumer: pids && cpuMs(pids), server: cpuMs([server.pid]) });
      const draining = measureDrain(server.jsm, STREAM, o.messages, { cpu });
      draining.catch(() => {});
      const consumer = await startConsumer(server, variant, o);
      if (consumer.pid) pids = descendants(consumer.pid);
      let drain: DrainResult;
      try {
        drain = await draining;
      } finally {
        await consumer.stop();
      }
      results.push({ variant: label(variant), ...drain });
      log(`throughput ${label(variant)}: ${drain.rate} msgs/s (${drain.drained} in ${drain.seconds} s)`);
    }
  } finally {
    await server.stop();
  }
  const raw = results.find((r) => r.variant === label("raw"));
  const rows = results.map((r) => {
    const isHost = r !== raw;
    const rt = ratio(r.rate, raw?.rate);
    return ["throughput", r.variant, r.drained, r.seconds, r.rate, r.cpuUsPerMsg?.consumer, r.cpuUsPerMsg?.server, isHost ? rt : 1, isHost ? `≥ ${o.minRatio} × raw` : "", isHost ? verdictOf(rt === null ? undefined : rt >= o.minRatio) : ""];
  });
  return {
    name: "throughput",
    natsVersion: server.version,
    options: { messages: o.messages, payload_bytes: o.msgSize, variants: o.variants, raw_max_messages: o.maxMessages, host_concurrency: o.hostConcurrency ?? "default (8)", min_ratio: o.minRatio, storage: "file" },
    table: { headers: ["bench", "variant", "drained", "seconds", "msgs/s", "cpu µs/msg", "server µs/msg", "ratio", "target", "verdict"], rows },
    variants: results.map((r) => ({ ...r, ratio_vs_raw: ratio(r.rate, raw?.rate) })),
    targets: results
      .filter((r) => r !== raw)
      .map((r) => {
        const rt = ratio(r.rate, raw?.rate);
        return { what: `throughput ${r.variant}`, verdict: verdictOf(rt === null ? undefined : rt >= o.minRatio), detail: `${r.rate} msgs/s = ${rt ?? "?"} × raw ${raw?.rate ?? "?"} (target ≥ ${o.minRatio})` };
      }),
    notes: [
      "msgs/s runs from the first poll that saw the stream shrink to the first that saw it empty (10 ms polls); process start-up is excluded",
      "cpu µs/msg: CPU time of the consumer process(es) per message drained, over the same window; server µs/msg: the nats-server's",
    ],
  };
}
