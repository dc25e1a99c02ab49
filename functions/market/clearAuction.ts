import * as v from "valibot";
import { defineFunction } from "syntropism";
import { clearMarketWindow } from "../../economy/clearing.ts";
import { flushEvents } from "../../economy/events.ts";
import { AGENT_STATE, MARKET_PRICES, projectAgents, projectPrices } from "../../economy/projections.ts";
import { causeOf, database, economyConfig } from "../../economy/runtime.ts";

// One clearing per window, whichever worker gets the tick: highest price per unit first within
// supply, winners burned, losers released, prices moved (price_update, also broadcast on
// market.price_update, and the market_prices KV bucket).
//
// Only the scheduler's tick clears a window (market/tick publishes it when the window has ended):
// a window id that is no window (negative, not an integer, an hour old, far ahead) is dead-lettered
// as INVALID_WINDOW, a window still open by the window clock as TICK_NOT_DUE; a window at or below
// the last cleared one is acknowledged and changes nothing.
const config = economyConfig();

export default defineFunction({
  description: "Clears a window's auction and moves prices",
  trigger: { type: "jetstream", stream: "MARKET", subject: "market.tick" },
  // any number: what is no window is refused with INVALID_WINDOW, not as a schema violation
  schema: v.object({ window_id: v.number() }),
  concurrency: 1,
  handler: async (p, ctx) => {
    const sql = await database();
    const cause = causeOf(ctx);
    const result = await clearMarketWindow(sql, cause, p.window_id, { windowMs: config.windowMs });
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    if (!result.duplicate) {
      await projectPrices(await ctx.kv(MARKET_PRICES), sql);
      await projectAgents(await ctx.kv(AGENT_STATE), sql, result.agents);
    }
    return result;
  },
});
