import { defineFunction } from "syntropism";
import { recordLatency } from "../report.ts";

// latency: records publish → handler latency (the payload carries its publish time `t`) and
// reports it in batches on a core subject the bench subscribes to.
const concurrency = Number(process.env.BENCH_HOST_CONCURRENCY) || undefined;

export default defineFunction({
  description: "Bench: records publish-to-handler latency",
  trigger: { type: "jetstream", stream: "BENCH_LAT", subject: "bench.lat" },
  ...(concurrency ? { concurrency } : {}),
  handler: (payload, ctx) => {
    recordLatency(ctx.nc, (payload as { t: number }).t);
  },
});
