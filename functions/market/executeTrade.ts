import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { placeBid, type BidResult } from "../../economy/bids.ts";
import { agentId } from "../../economy/limits.ts";
import { agentBalance } from "../../economy/ledger.ts";
import { toCredits } from "../../economy/money.ts";
import { AGENT_STATE, projectAgents, readPrices } from "../../economy/projections.ts";
import { causeOf, windowOf } from "../../economy/runtime.ts";
import { bidInput, bidSchema } from "../../economy/bidBody.ts";

// Balance, prices and (optionally) a bid in one round trip:
// `nats req market.execute_trade '{"agent_id":"a1","bid":{"resource":"cpu","quantity":100,"price":0.002}}'`
// (or a bundle bid: `"bid":{"bundle":{"cpu":500,"memory":256},"price":0.7}`).
// Set Nats-Msg-Id on the request to make a retried request place its bid once. The reply's fields
// are snake_case like every payload's; its bid also carries `bidId` and `windowId`, the names of
// release 0.1, until release 0.3 (docs/economy.md).
export default defineFunction({
  description: "Reads balance and prices, and places a bid, in one request",
  trigger: { type: "request", subject: "market.execute_trade" },
  schema: v.object({
    agent_id: agentId,
    bid: v.optional(bidSchema),
  }),
  resources: { economy },
  handler: async (p, ctx) => {
    const eco = ctx.resources.economy;
    const sql = await eco.database();
    let bid: BidResult | undefined;
    if (p.bid) {
      bid = await placeBid(sql, causeOf(ctx), bidInput(p.agent_id, p.bid), windowOf(Date.now(), eco.settings.windowMs));
      await eco.publishPending(ctx, ctx.msgId);
      await projectAgents(await ctx.kv(AGENT_STATE), sql, [p.agent_id]);
    }
    // only the ledger's own refusal means the agent is unknown; a lost database stays what it is
    const b = await agentBalance(sql, p.agent_id);
    const prices = Object.fromEntries((await readPrices(sql)).map((x) => [x.resource, x.price]));
    return { agent_id: p.agent_id, balance: toCredits(b.balance), reserved: toCredits(b.reserved), available: toCredits(b.available), prices, bid: bid ? wire(bid) : null };
  },
});

/** The bid's answer with snake_case names (and, for one more release, the camelCase ones). */
function wire(b: BidResult) {
  if (b.status === "rejected") return { status: b.status, reason: b.reason, message: b.message, duplicate: b.duplicate };
  return { status: b.status, bid_id: b.bidId, window_id: b.windowId, amount: b.amount, duplicate: b.duplicate, balance: b.balance, reserved: b.reserved, bidId: b.bidId, windowId: b.windowId };
}
