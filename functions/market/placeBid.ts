import * as v from "valibot";
import { defineFunction } from "syntropism";
import { placeBid } from "../../economy/bids.ts";
import { flushEvents } from "../../economy/events.ts";
import { AGENT_STATE, projectAgents } from "../../economy/projections.ts";
import { causeOf, database, economyConfig, windowOf } from "../../economy/runtime.ts";

// `nats pub market.bid.agent_1 '{"resource":"cpu","quantity":500,"price":0.002}'` — a bid for this
// window's auction: price is credits per unit. Accepted → bid_placed (the amount is reserved);
// refused → bid_rejected with a reason (INSUFFICIENT_FUNDS, UNKNOWN_AGENT, BELOW_MARKET_PRICE …).
const config = economyConfig();

export default defineFunction({
  description: "Validates a bid and enters it into the current window's auction",
  trigger: { type: "jetstream", stream: "MARKET", subject: "market.bid.*" },
  schema: v.object({
    resource: v.picklist(["cpu", "memory", "tokens", "attention"]),
    quantity: v.pipe(v.number(), v.integer(), v.minValue(1)),
    price: v.pipe(v.number(), v.gtValue(0)),
  }),
  concurrency: 16,
  handler: async (p, ctx) => {
    const agentId = ctx.subject.split(".")[2]!;
    const sql = await database();
    const cause = causeOf(ctx);
    const result = await placeBid(sql, cause, { agentId, ...p, streamSeq: ctx.seq }, windowOf(Date.now(), config.windowMs));
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    if (!(result.status === "rejected" && result.reason === "UNKNOWN_AGENT")) await projectAgents(await ctx.kv(AGENT_STATE), sql, [agentId]);
    return result;
  },
});
