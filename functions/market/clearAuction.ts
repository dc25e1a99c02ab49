import * as v from "valibot";
import { defineFunction } from "syntropism";
import { asRefusal, economy } from "../../economy/resource.ts";
import { clearMarketWindow } from "../../economy/clearing.ts";
import { AGENT_STATE, MARKET_PRICES, projectAgents, projectPrices } from "../../economy/projections.ts";
import { causeOf } from "../../economy/runtime.ts";

// One clearing per window, whichever worker gets the tick: highest price per unit first within
// supply, winners burned, losers released, prices moved (price_update, also broadcast on
// market.price_update, and the market_prices KV bucket).
//
// Only the scheduler's tick clears a window (market/tick publishes it when the window has ended):
// a window id that is no window (negative, not an integer, an hour old, far ahead) is dead-lettered
// as INVALID_WINDOW, a window still open by the window clock as TICK_NOT_DUE; a window at or below
// the last cleared one is acknowledged and changes nothing.
export default defineFunction({
  description: "Clears a window's auction and moves prices",
  trigger: { type: "jetstream", stream: "MARKET", subject: "market.tick" },
  // any number: what is no window is refused with INVALID_WINDOW, not as a schema violation
  schema: v.object({ window_id: v.number() }),
  concurrency: 1,
  resources: { economy },
  handler: async (p, ctx) => {
    const eco = ctx.resources.economy;
    const sql = await eco.database();
    // the clearing takes its own locks in its own transaction (economy/clearing.ts)
    const result = await asRefusal(() => clearMarketWindow(sql, causeOf(ctx), p.window_id, { windowMs: eco.settings.windowMs }));
    await eco.publishPending(ctx, ctx.msgId);
    if (!result.duplicate) {
      await projectPrices(await ctx.kv(MARKET_PRICES), sql);
      await projectAgents(await ctx.kv(AGENT_STATE), sql, result.agents);
    }
    return result;
  },
});
