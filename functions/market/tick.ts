import { defineFunction } from "syntropism";
import { economyConfig } from "../../economy/runtime.ts";

// Every window boundary, every worker publishes `market.tick` for the window that just ended; the
// msg ids derive from the tick, so the MARKET stream keeps exactly one per window.
const config = economyConfig();

export default defineFunction({
  description: "Closes each auction window by publishing its tick",
  trigger: { type: "schedule", everyMs: config.windowMs },
  handler: async (p: unknown, ctx) => {
    const { tick } = p as { tick: number };
    await ctx.publish("market.tick", { window_id: tick - 1 });
  },
});
