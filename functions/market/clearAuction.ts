import * as v from "valibot";
import { defineFunction } from "syntropism";
import { clearMarketWindow } from "../../economy/clearing.ts";
import { flushEvents } from "../../economy/events.ts";
import { AGENT_STATE, MARKET_PRICES, projectAgents, projectPrices } from "../../economy/projections.ts";
import { causeOf, database } from "../../economy/runtime.ts";

// One clearing per window, whichever worker gets the tick: highest price per unit first within
// supply, winners burned, losers released, prices moved (price_update, also broadcast on
// market.price_update, and the market_prices KV bucket).
export default defineFunction({
  description: "Clears a window's auction and moves prices",
  trigger: { type: "jetstream", stream: "MARKET", subject: "market.tick" },
  schema: v.object({ window_id: v.pipe(v.number(), v.integer()) }),
  concurrency: 1,
  handler: async (p, ctx) => {
    const sql = await database();
    const cause = causeOf(ctx);
    const result = await clearMarketWindow(sql, cause, p.window_id);
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    if (!result.duplicate) {
      await projectPrices(await ctx.kv(MARKET_PRICES), sql);
      await projectAgents(await ctx.kv(AGENT_STATE), sql, result.agents);
    }
    return result;
  },
});
