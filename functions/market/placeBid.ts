import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { BidBatcher } from "../../economy/bids.ts";
import { refuse } from "../../economy/errors.ts";
import { causeOf, windowOf } from "../../economy/runtime.ts";
import { bidSchema, bidInput } from "../../economy/bidBody.ts";

// `nats pub market.bid.agent_1 '{"resource":"cpu","quantity":500,"price":0.002}'` — a bid for this
// window's auction: price is credits per unit. Or a bundle, won all together or not at all:
// `nats pub market.bid.agent_1 '{"bundle":{"cpu":500,"memory":256},"price":0.7}'`, price being
// credits for the whole (economy/auction.ts). Accepted → bid_placed (the amount is reserved).
// Refused (INSUFFICIENT_FUNDS, UNKNOWN_AGENT, AGENT_TERMINATED, BELOW_MARKET_PRICE …) → the refusal is recorded and
// stated as bid_rejected, committed with the group, and then the command is dead-lettered with the
// reason as its code. Bids handled at the same time in one worker are written in one transaction
// (economy/bids.ts, "group commit"), each with its own answer: a refused bid fails only its own
// message. Each bid then publishes its own events through ctx.publish; its agent's read model (KV)
// follows within ~20 ms.
export default defineFunction({
  description: "Validates a bid and enters it into the current window's auction",
  trigger: { type: "jetstream", stream: "MARKET", subject: "market.bid.*" },
  schema: bidSchema,
  // many bids in flight per worker, so that they can share transactions
  concurrency: 1024,
  prefetch: 2048,
  resources: { economy },
  setup: ({ resources }) => ({ bids: new BidBatcher(() => resources.economy.database()) }),
  handler: async (p, ctx) => {
    const { economy: eco, bids } = ctx.resources;
    const agentId = ctx.subject.split(".")[2]!;
    const cause = causeOf(ctx);
    const { result, events } = await bids.place({ cause, input: bidInput(agentId, p, ctx.seq), windowId: windowOf(Date.now(), eco.settings.windowMs) });
    if (result.status !== "rejected" || result.reason !== "UNKNOWN_AGENT") eco.projector.add([agentId]);
    // a redelivery may find events its first run never published
    if (result.duplicate) await eco.publishPending(ctx, cause.sourceMsgId);
    else await eco.publishRecorded(ctx, events);
    // a redelivered refusal (its dead letter was not written) finds the recorded one and says it again
    if (result.status === "rejected") throw refuse(result.reason, result.message);
    return result;
  },
});
