import { defineFunction } from "syntropism";

// pingpong: a request function that answers with its payload.
export default defineFunction({
  description: "Bench: replies with its payload",
  trigger: { type: "request", subject: "bench.ping" },
  handler: (payload) => payload,
});
