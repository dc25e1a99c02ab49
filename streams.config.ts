import { defineConfig } from "syntropism";

// Every stream, consumer default and KV bucket the project's functions use. `host streams plan`
// compares this with the server; `host streams apply` (or `host start --apply`, or `npm start`)
// makes the server match. The host adds its own: the DEAD_LETTERS stream and the host_ratelimit
// and host_runs buckets.
export default defineConfig({
  service: { name: "syntropism", version: "0.1.0" },
  streams: [],
  kv: [],
  consumerDefaults: {
    ackWaitMs: 30_000,
    maxAckPending: 1000,
    concurrency: 8,
    timeoutMs: 30_000,
    maxDeliver: 5,
  },
});
