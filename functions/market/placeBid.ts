import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import type { KV } from "@nats-io/kv";
import type { JetStreamClient } from "@nats-io/jetstream";
import { BidBatcher } from "../../economy/bids.ts";
import { flushEvents, publishRecorded } from "../../economy/events.ts";
import { AGENT_STATE, AgentProjector } from "../../economy/projections.ts";
import { causeOf, database, economyConfig, windowOf } from "../../economy/runtime.ts";

// `nats pub market.bid.agent_1 '{"resource":"cpu","quantity":500,"price":0.002}'` — a bid for this
// window's auction: price is credits per unit. Accepted → bid_placed (the amount is reserved).
// Refused (INSUFFICIENT_FUNDS, UNKNOWN_AGENT, BELOW_MARKET_PRICE …) → the refusal is recorded and
// stated as bid_rejected, committed with the group, and then the command is dead-lettered with the
// reason as its code. Bids handled at the same time in one worker are written in one transaction
// (economy/bids.ts), each with its own answer: a refused bid fails only its own message. Their
// events are published together; their agents' read models (KV) follow within ~20 ms.
const config = economyConfig();
let out: { js: JetStreamClient; kv: Promise<KV> } | undefined;
const projector = new AgentProjector(() => out!.kv, database);
const batcher = new BidBatcher(database);
// The group's events are committed in the outbox with its bids: publishing them now is the fast
// path, not a condition of the bids' success. It runs beside the next group (a slow or failed
// publish — NATS restarting — holds no bid back), at most PUBLISHING groups at a time; what it
// does not publish the outbox relay does within ~1.5 s (functions/economy/relayOutbox.ts).
const PUBLISHING = 4;
let publishing = 0;
batcher.afterCommit = async (sql, group, results, recorded) => {
  projector.mark(group.filter((_g, i) => (results[i] as { reason?: string }).reason !== "UNKNOWN_AGENT").map((g) => g.input.agentId));
  if (publishing >= PUBLISHING) return;
  publishing++;
  // duplicates (redeliveries) may have events a crashed worker never published
  const repeats = group.filter((_g, i) => results[i]!.duplicate).map((g) => g.cause.sourceMsgId);
  void (async () => {
    await publishRecorded(out!.js, sql, recorded);
    if (repeats.length) await flushEvents(out!.js, sql, repeats);
  })()
    .catch(() => {}) // left to the relay
    .finally(() => publishing--);
};

export default defineFunction({
  description: "Validates a bid and enters it into the current window's auction",
  trigger: { type: "jetstream", stream: "MARKET", subject: "market.bid.*" },
  schema: v.object({
    resource: v.picklist(["cpu", "memory", "tokens", "attention"]),
    quantity: v.pipe(v.number(), v.integer(), v.minValue(1)),
    price: v.pipe(v.number(), v.gtValue(0)),
  }),
  // many bids in flight per worker, so that they can share transactions
  concurrency: 1024,
  prefetch: 2048,
  handler: async (p, ctx) => {
    out ??= { js: ctx.js, kv: ctx.kv(AGENT_STATE) };
    const agentId = ctx.subject.split(".")[2]!;
    const result = await batcher.place({ cause: causeOf(ctx), input: { agentId, ...p, streamSeq: ctx.seq }, windowId: windowOf(Date.now(), config.windowMs) });
    // a redelivered refusal (its dead letter was not written) finds the recorded one and says it again
    if (result.status === "rejected") throw new NonRetriableError(result.message, { code: result.reason });
    return result;
  },
});
