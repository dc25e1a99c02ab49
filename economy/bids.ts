import type { Sql, TransactionSql } from "./db.ts";
import { recordEvents, type Cause, type EventInput } from "./events.ts";
import { agentAccount, inTransaction, lockAccounts } from "./ledger.ts";
import { toCredits, toMicro } from "./money.ts";
import type { Resource } from "./auction.ts";

// Placing a bid: checked and recorded in one transaction under the agent's account lock, so two
// bids of one agent cannot both spend the same credits. An accepted bid reserves its amount until
// its window clears; a refused one is recorded too (with its reason), so a redelivery gives the same
// answer. Used by the market.bid work queue and by market.execute_trade.

export type BidInput = { agentId: string; resource: Resource; quantity: number; price: number; streamSeq?: number };

export type BidResult =
  | { status: "placed"; bidId: string; windowId: number; amount: number; duplicate: boolean }
  | { status: "rejected"; reason: RejectReason; message: string; duplicate: boolean };

export type RejectReason = "UNKNOWN_AGENT" | "INSUFFICIENT_FUNDS" | "BELOW_MARKET_PRICE" | "EXCEEDS_SUPPLY" | "INVALID_BID";

export async function placeBid(sql: Sql, cause: Cause, input: BidInput, windowId: number): Promise<BidResult> {
  return inTransaction(sql, async (tx) => {
    const prior = await tx<{ id: bigint; status: string; reason: string | null; window_id: bigint; amount: bigint }[]>`
      SELECT id, status, reason, window_id, amount FROM bids WHERE source_msg_id = ${cause.sourceMsgId}`;
    if (prior[0]) return priorResult(prior[0]);
    // refusals without a bid row (unknown agent, unreadable price) are known by their event
    const [refused] = await tx<{ reason: string; message: string }[]>`
      SELECT envelope->'payload'->>'reason' AS reason, envelope->'payload'->>'message' AS message
        FROM outbox WHERE source_msg_id = ${cause.sourceMsgId} AND envelope->>'type' = 'bid_rejected' LIMIT 1`;
    if (refused) return { status: "rejected", reason: refused.reason as RejectReason, message: refused.message, duplicate: true };

    const reject = async (reason: RejectReason, message: string, amount?: bigint): Promise<BidResult> => {
      const known = await tx`SELECT 1 FROM agents WHERE id = ${input.agentId}`;
      if (known.length && amount !== undefined) {
        await tx`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, status, reason, stream_seq, source_msg_id, correlation_id, settled_at)
                 VALUES (${input.agentId}, ${windowId}, ${input.resource}, ${input.quantity}, ${(amount / BigInt(input.quantity)).toString()}, ${amount.toString()},
                         'rejected', ${reason}, ${input.streamSeq ?? null}, ${cause.sourceMsgId}, ${cause.correlationId}, now())`;
      }
      const ev: EventInput = { type: "bid_rejected", payload: { agent_id: input.agentId, reason, message, resource: input.resource, ...(amount !== undefined ? { amount: toCredits(amount) } : {}) } };
      await recordEvents(tx, cause, [ev]);
      return { status: "rejected", reason, message, duplicate: false };
    };

    let pricePerUnit: bigint;
    try {
      pricePerUnit = toMicro(input.price);
    } catch (err) {
      return reject("INVALID_BID", (err as Error).message);
    }
    if (pricePerUnit <= 0n || !Number.isSafeInteger(input.quantity) || input.quantity <= 0) {
      return reject("INVALID_BID", "quantity must be a positive integer and price positive");
    }
    const amount = pricePerUnit * BigInt(input.quantity);
    const balances = await lockAccounts(tx, [agentAccount(input.agentId)]);
    const bal = balances.get(agentAccount(input.agentId));
    if (bal === undefined) return reject("UNKNOWN_AGENT", `agent ${input.agentId} is not known`);

    const [market] = await tx<{ price: bigint; supply: bigint }[]>`SELECT price, supply FROM market_state WHERE resource = ${input.resource}`;
    if (!market) return reject("INVALID_BID", `resource ${input.resource} has no market`, amount);
    if (pricePerUnit < market.price) {
      return reject("BELOW_MARKET_PRICE", `bid ${input.price} per unit is below the market price ${toCredits(market.price)}`, amount);
    }
    if (BigInt(input.quantity) > market.supply) {
      return reject("EXCEEDS_SUPPLY", `${input.quantity} units asked; the window's supply is ${market.supply}`, amount);
    }
    const [r] = await tx<{ reserved: bigint }[]>`SELECT coalesce(sum(amount), 0)::bigint AS reserved FROM bids WHERE agent_id = ${input.agentId} AND status = 'open'`;
    const available = bal - BigInt(r!.reserved);
    if (available < amount) {
      return reject("INSUFFICIENT_FUNDS", `bid of ${toCredits(amount)} credits; ${toCredits(available)} available`, amount);
    }
    const [bid] = await tx<{ id: bigint }[]>`
      INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, status, stream_seq, source_msg_id, correlation_id)
      VALUES (${input.agentId}, ${windowId}, ${input.resource}, ${input.quantity}, ${pricePerUnit.toString()}, ${amount.toString()},
              'open', ${input.streamSeq ?? null}, ${cause.sourceMsgId}, ${cause.correlationId})
      RETURNING id`;
    const bidId = String(bid!.id);
    await recordEvents(tx, cause, [
      {
        type: "bid_placed",
        payload: { bid_id: bidId, agent_id: input.agentId, window_id: windowId, resource: input.resource, quantity: input.quantity, price: input.price, amount: toCredits(amount) },
      },
    ]);
    return { status: "placed", bidId, windowId, amount: toCredits(amount), duplicate: false };
  });
}

function priorResult(row: { id: bigint; status: string; reason: string | null; window_id: bigint; amount: bigint }): BidResult {
  if (row.status === "rejected") return { status: "rejected", reason: (row.reason ?? "INVALID_BID") as RejectReason, message: `bid refused: ${row.reason}`, duplicate: true };
  return { status: "placed", bidId: String(row.id), windowId: Number(row.window_id), amount: toCredits(row.amount), duplicate: true };
}

export type { TransactionSql };
