import { defineConfig } from "syntropism";

// Streams for the benchmarks (bench/functions). File storage, as in production; limits far above
// what a run publishes so backpressure never engages.
export default defineConfig({
  service: { name: "bench", version: "1.0.0" },
  streams: [
    { name: "BENCH_WORK", subjects: ["bench.work"], retention: "workqueue", maxMsgs: 1_000_000, discard: "new" },
    { name: "BENCH_LAT", subjects: ["bench.lat"], retention: "workqueue", maxMsgs: 1_000_000, discard: "new" },
  ],
});
