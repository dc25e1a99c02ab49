import { log, ratio, startBenchServer, summarize, verdictOf, waitFor, type BenchResult, type BenchServer, type Summary } from "./lib.ts";
import type { Options } from "./options.ts";
import { startHostProcess, startRawWorker, type Proc } from "./procs.ts";
import { REPORT_SUBJECT } from "./report.ts";
import { addRawConsumer, benchConfig, freshStream, publishPaced, samplePending, type PacedResult, type PendingPeaks } from "./streams.ts";

// Latency under load: messages are published at fixed offered rates into BENCH_LAT (a timer loop of
// async publishes, each payload carrying its publish time). The consumer — the host running
// bench/functions/lat.ts under `host start --workers 1`, or the raw nats.js consume() + ack()
// worker — computes publish → handler latency on arrival and reports it in batches on a core
// subject. Meanwhile the consumer's num_pending (published, not yet delivered) and num_ack_pending
// are sampled every 50 ms.

const STREAM = "BENCH_LAT";
const SUBJECT = "bench.lat";

type Phase = { variant: string; rate: number; publish: PacedResult; received: number; latency: Summary; backlog: PendingPeaks };

type Collector = { values: number[]; reset(): void };

function collect(server: BenchServer): Collector {
  const c: Collector = {
    values: [],
    reset() {
      c.values = [];
    },
  };
  server.nc.subscribe(REPORT_SUBJECT, {
    callback: (_err, m) => {
      for (const v of m.json<number[]>()) c.values.push(v);
    },
  });
  return c;
}

async function phase(server: BenchServer, c: Collector, variant: string, consumer: string, rate: number, o: Options): Promise<Phase> {
  c.reset();
  const sampler = samplePending(server.jsm, STREAM, consumer, 50);
  const publish = await publishPaced(server.js, SUBJECT, rate, o.durationS * 1000, o.msgSize);
  await waitFor(`${publish.acked} latency reports`, () => c.values.length >= publish.acked, 30_000, 50).catch((err) => log(`latency ${variant}: ${(err as Error).message}`));
  const backlog = await sampler.stop();
  const latency = summarize(c.values);
  log(`latency ${variant} @${rate}/s: offered ${publish.achievedRate}/s, p50 ${latency.p50} ms, p99 ${latency.p99} ms, peak pending ${backlog.peakPending}`);
  return { variant, rate, publish, received: c.values.length, latency, backlog };
}

async function runVariant(server: BenchServer, c: Collector, variant: "raw" | "host", o: Options): Promise<Phase[]> {
  await freshStream(server.nc, server.jsm, await benchConfig(), STREAM);
  let proc: Proc;
  let consumer: string;
  if (variant === "raw") {
    consumer = "raw_lat";
    await addRawConsumer(server.jsm, STREAM, SUBJECT, consumer);
    proc = await startRawWorker(server.url, ["consume", STREAM, consumer, String(o.maxMessages), "report"], { profileDir: o.profile, label: "latency-raw" });
  } else {
    consumer = "lat";
    proc = await startHostProcess({ url: server.url, workers: 1, profileDir: o.profile, label: "latency-host" });
  }
  const name = variant === "raw" ? "raw consume()" : "host --workers 1";
  try {
    await phase(server, c, `${name} (warm-up)`, consumer, Math.min(...o.rates), { ...o, durationS: 1 });
    const out: Phase[] = [];
    for (const rate of o.rates) out.push(await phase(server, c, name, consumer, rate, o));
    return out;
  } finally {
    await proc.stop();
  }
}

export async function latency(o: Options): Promise<BenchResult> {
  const server = await startBenchServer("latency");
  const phases: Phase[] = [];
  try {
    const c = collect(server);
    phases.push(...(await runVariant(server, c, "raw", o)));
    phases.push(...(await runVariant(server, c, "host", o)));
  } finally {
    await server.stop();
  }
  const rawAt = (rate: number) => phases.find((p) => p.variant.startsWith("raw") && p.rate === rate);
  const isHost = (p: Phase) => p.variant.startsWith("host");
  const passes = (p: Phase) => p.backlog.peakPending < o.maxLag && p.received >= p.publish.acked;
  const rows = phases.map((p) => [
    "latency",
    p.variant,
    p.rate,
    p.publish.achievedRate,
    p.received,
    p.latency.p50,
    p.latency.p99,
    p.latency.max,
    p.backlog.peakPending,
    p.backlog.peakAckPending,
    isHost(p) ? ratio(p.latency.p99, rawAt(p.rate)?.latency.p99) : 1,
    isHost(p) ? `pending < ${o.maxLag}` : "",
    isHost(p) ? verdictOf(passes(p)) : "",
  ]);
  return {
    name: "latency",
    natsVersion: server.version,
    options: { rates: o.rates, seconds_per_rate: o.durationS, payload_bytes: o.msgSize, raw_max_messages: o.maxMessages, host_concurrency: o.hostConcurrency ?? "default (8)", backlog_sample_ms: 50, max_lag: o.maxLag, storage: "file" },
    table: {
      headers: ["bench", "variant", "rate/s", "offered/s", "received", "p50 ms", "p99 ms", "max ms", "peak pending", "peak ack pend", "p99 ratio", "target", "verdict"],
      rows,
    },
    variants: phases,
    targets: phases.filter(isHost).map((p) => ({
      what: `latency host @${p.rate}/s backlog`,
      verdict: verdictOf(passes(p)),
      detail: `peak num_pending ${p.backlog.peakPending} (target < ${o.maxLag}); p50 ${p.latency.p50} ms, p99 ${p.latency.p99} ms; ${p.received}/${p.publish.acked} handled`,
    })),
    notes: ["latency is publish call → handler start, clocks of two processes on one machine; pending = num_pending (not yet delivered)"],
  };
}
