import { defineFunction } from "syntropism";

// throughput: a JetStream function that does nothing, so only the host's own work is measured.
// BENCH_HOST_CONCURRENCY overrides the concurrency (default: consumerDefaults, 8).
const concurrency = Number(process.env.BENCH_HOST_CONCURRENCY) || undefined;

export default defineFunction({
  description: "Bench: does nothing",
  trigger: { type: "jetstream", stream: "BENCH_WORK", subject: "bench.work" },
  ...(concurrency ? { concurrency } : {}),
  handler: () => {},
});
