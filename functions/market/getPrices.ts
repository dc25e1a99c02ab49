import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { readPrices } from "../../economy/projections.ts";
import { windowOf } from "../../economy/runtime.ts";

// `nats req market.prices ''` → {"window_id":1771,"window_ms":1000,"closes_in_ms":412,"last_cleared":1770,
// "resources":{"cpu":{"price":0.001,"floor":0.0001,"supply":2000,"utilization":0.5,"window_id":1770,"updated_at":"…"},…}}.
// The market as the clearing left it (market_state): per resource the price a bid must reach now,
// its floor, the supply of a window and the utilization of the last window that moved it; and the
// window now open by the clock, when it closes, and the last window cleared (null before the first).
// The same per resource is in the market_prices KV bucket; this reads PostgreSQL, the truth.
export default defineFunction({
  description: "Current price, supply and utilization per resource, and the current window",
  trigger: { type: "request", subject: "market.prices" },
  schema: v.optional(v.unknown()),
  resources: { economy },
  handler: async (_p, ctx) => {
    const eco = ctx.resources.economy;
    const sql = await eco.database();
    const now = Date.now();
    const windowMs = eco.settings.windowMs;
    const windowId = windowOf(now, windowMs);
    const [prices, [last]] = await Promise.all([readPrices(sql), sql<{ window_id: bigint | null }[]>`SELECT max(window_id) AS window_id FROM market_windows`]);
    return {
      window_id: windowId,
      window_ms: windowMs,
      closes_in_ms: (windowId + 1) * windowMs - now,
      last_cleared: last?.window_id == null ? null : Number(last.window_id),
      resources: Object.fromEntries(prices.map(({ resource, ...rest }) => [resource, rest])),
    };
  },
});
