import * as v from "valibot";
import { defineFunction } from "syntropism";

// `nats req system.ping ''` → {"pong":true,...}: a liveness probe answered by any worker.
export default defineFunction({
  description: "Liveness probe: replies with the worker's pid and time",
  trigger: { type: "request", subject: "system.ping" },
  schema: v.optional(v.object({ echo: v.optional(v.string()) })),
  handler: (payload) => ({ pong: true, echo: payload?.echo, pid: process.pid, at: new Date().toISOString() }),
});
