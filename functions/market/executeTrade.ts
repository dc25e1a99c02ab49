import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { placeBid } from "../../economy/bids.ts";
import { flushEvents } from "../../economy/events.ts";
import { balance } from "../../economy/ledger.ts";
import { toCredits } from "../../economy/money.ts";
import { AGENT_STATE, projectAgents, readPrices } from "../../economy/projections.ts";
import { causeOf, database, economyConfig, windowOf } from "../../economy/runtime.ts";

// Balance, prices and (optionally) a bid in one round trip:
// `nats req market.execute_trade '{"agent_id":"a1","bid":{"resource":"cpu","quantity":100,"price":0.002}}'`.
// Set Nats-Msg-Id on the request to make a retried request place its bid once.
const config = economyConfig();

export default defineFunction({
  description: "Reads balance and prices, and places a bid, in one request",
  trigger: { type: "request", subject: "market.execute_trade" },
  schema: v.object({
    agent_id: v.string(),
    bid: v.optional(
      v.object({ resource: v.picklist(["cpu", "memory", "tokens", "attention"]), quantity: v.pipe(v.number(), v.integer(), v.minValue(1)), price: v.pipe(v.number(), v.gtValue(0)) }),
    ),
  }),
  handler: async (p, ctx) => {
    const sql = await database();
    const cause = causeOf(ctx);
    let bid;
    if (p.bid) {
      bid = await placeBid(sql, cause, { agentId: p.agent_id, ...p.bid }, windowOf(Date.now(), config.windowMs));
      await flushEvents(ctx.js, sql, cause.sourceMsgId);
    }
    let b;
    try {
      b = await balance(sql, p.agent_id);
    } catch {
      throw new NonRetriableError(`unknown agent ${p.agent_id}`, { code: "UNKNOWN_AGENT" });
    }
    if (bid) await projectAgents(await ctx.kv(AGENT_STATE), sql, [p.agent_id]);
    const prices = Object.fromEntries((await readPrices(sql)).map((x) => [x.resource, x.price]));
    return { agent_id: p.agent_id, balance: toCredits(b.balance), reserved: toCredits(b.reserved), available: toCredits(b.available), prices, bid: bid ?? null };
  },
});
