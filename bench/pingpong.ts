import type { NatsConnection } from "@nats-io/transport-node";
import { log, nowMs, payloadOf, ratio, round, startBenchServer, summarize, verdictOf, type BenchResult, type Summary } from "./lib.ts";
import type { Options } from "./options.ts";
import { startHostProcess, startRawWorker, type Proc } from "./procs.ts";

// Request/reply round trips: the host's request function (bench/functions/ping.ts, run by
// `host start --workers 1`) against a raw nats.js responder (`subscribe` + `msg.respond`, its own
// process) on the same server. `concurrency` requesters each send one request at a time.

type Variant = { variant: string; subject: string; summary: Summary; seconds: number; reqPerSec: number };

async function roundTrips(nc: NatsConnection, subject: string, count: number, size: number, concurrency: number): Promise<{ rtts: Float64Array; seconds: number }> {
  const rtts = new Float64Array(count);
  let next = 0;
  const body = payloadOf(size, nowMs(), 0);
  const lane = async () => {
    while (next < count) {
      const i = next++;
      const t = performance.now();
      await nc.request(subject, body, { timeout: 5000 });
      rtts[i] = performance.now() - t;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return { rtts, seconds: (performance.now() - start) / 1000 };
}

async function measure(nc: NatsConnection, variant: string, subject: string, o: Options): Promise<Variant> {
  if (o.warmup) await roundTrips(nc, subject, o.warmup, o.size, o.concurrency);
  const { rtts, seconds } = await roundTrips(nc, subject, o.count, o.size, o.concurrency);
  const summary = summarize(rtts);
  log(`pingpong ${variant}: p50 ${summary.p50} ms, p95 ${summary.p95} ms, p99 ${summary.p99} ms over ${summary.n}`);
  return { variant, subject, summary, seconds: round(seconds), reqPerSec: Math.round(o.count / seconds) };
}

export async function pingpong(o: Options): Promise<BenchResult> {
  const server = await startBenchServer("pingpong");
  const results: Variant[] = [];
  let proc: Proc | undefined;
  try {
    proc = await startRawWorker(server.url, ["respond", "bench.rawping"], { profileDir: o.profile, label: "pingpong-raw" });
    results.push(await measure(server.nc, "raw nats.js", "bench.rawping", o));
    await proc.stop();
    proc = await startHostProcess({ url: server.url, workers: 1, profileDir: o.profile, label: "pingpong-host" });
    results.push(await measure(server.nc, "host --workers 1", "bench.ping", o));
    await proc.stop();
    proc = undefined;
  } finally {
    await proc?.stop();
    await server.stop();
  }
  const [raw, host] = results as [Variant, Variant];
  const pass = host.summary.p95 < o.p95Ms;
  const row = (v: Variant, isHost: boolean) => [
    "pingpong",
    v.variant,
    v.summary.n,
    v.summary.p50,
    v.summary.p95,
    v.summary.p99,
    v.summary.max,
    v.reqPerSec,
    isHost ? ratio(v.summary.p95, raw.summary.p95) : 1,
    isHost ? `p95 < ${o.p95Ms} ms` : "",
    isHost ? verdictOf(pass) : "",
  ];
  return {
    name: "pingpong",
    natsVersion: server.version,
    options: { count: o.count, warmup: o.warmup, payload_bytes: o.size, concurrency: o.concurrency, p95_gate_ms: o.p95Ms },
    table: {
      headers: ["bench", "variant", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s", "p95 ratio", "target", "verdict"],
      rows: [row(raw, false), row(host, true)],
    },
    variants: results.map((v) => ({ ...v, ratio_p50: ratio(v.summary.p50, raw.summary.p50), ratio_p95: ratio(v.summary.p95, raw.summary.p95) })),
    targets: [{ what: "pingpong host p95", verdict: verdictOf(pass), detail: `${host.summary.p95} ms < ${o.p95Ms} ms` }],
  };
}
