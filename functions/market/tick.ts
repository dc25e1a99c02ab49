import { defineFunction } from "syntropism";
import { settingsOf } from "../../config/settings.ts";

// Every window boundary, every worker publishes `market.tick` for the window that just ended; the
// msg ids derive from the tick, so the MARKET stream keeps exactly one per window. The period is the
// economy's window (ECONOMY_WINDOW_MS).
export default defineFunction({
  description: "Closes each auction window by publishing its tick",
  trigger: (settings) => ({ type: "schedule", everyMs: settingsOf(settings).economy.windowMs }),
  handler: async (p: unknown, ctx) => {
    const { tick } = p as { tick: number };
    await ctx.publish("market.tick", { window_id: tick - 1 });
  },
});
