import { setTimeout as sleep } from "node:timers/promises";
import type { Sql } from "./db.ts";
import { bidAmount, clearMarket, isRunnable, quantityOf, RESOURCES, type Bundle, type MarketBid, type Resource } from "./auction.ts";
import { EconomyErrorCode, TickRefusedError } from "./errors.ts";
import { recordEvents, type Cause, type EventInput } from "./events.ts";
import { agentAccount, BURN_ACCOUNT, burn, inTransaction, lockAccounts, terminatedAgents } from "./ledger.ts";
import { toCredits } from "./money.ts";
import { nextPrice } from "./pricing.ts";

// Clearing window W, exactly once, and only once W has closed. One clearing runs at a time (an
// advisory lock); under it, a window at or below the last cleared one changes nothing (a second
// tick for W, or a late tick for a window a later clearing already covered). Every open bid of W
// or earlier takes part, so a bid that missed its window's clearing joins the next one. Winners'
// amounts are burned, losers are released, prices move with utilization — one transaction, which
// takes its locks in the economy's order (economy/ledger.ts lockAccounts): the accounts of every
// agent with an open bid and system:burn, sorted, then those agents' bids, then market_state.
//
// Bundle bids clear in the same pass as single bids (economy/auction.ts, ranked at the window's
// prices). A winning bundle is the agent's to run with in the window after the one being cleared —
// the window that opens as this one closes, and the clearing runs: it writes a resource_bundles row
// (what the orchestrator launches a container with, for how long) and states bundle_allocated,
// which the orchestrator reacts to. Both happen in this transaction, and a window clears once, so a
// redelivered tick writes neither again (it only publishes what is still unpublished, under the
// same event ids).

export type ClearingResult = {
  windowId: number;
  duplicate: boolean;
  winners: number;
  losers: number;
  burned: number;
  /** Agents whose balances changed or were released, for the read models. */
  agents: string[];
};

/** The window clock a tick is checked against (economy/runtime.ts windowOf). */
export type WindowClock = {
  windowMs: number;
  /** Default Date.now. */
  now?: () => number;
  /** A tick whose window ended longer ago than this is refused (default 1 h). */
  maxAgeMs?: number;
  /** A tick whose window ends within this much is waited for, not refused: workers' clocks differ a little (default a quarter window, at most 1 s). */
  skewMs?: number;
};

export const MAX_TICK_AGE_MS = 3_600_000;
export const TICK_SKEW_MS = 1_000;
/** The window length when the caller gives none (tests, tools): ECONOMY_WINDOW_MS's default. */
export const DEFAULT_WINDOW_MS = 1000;

/** Held exclusively by a clearing, shared by bid groups (economy/bids.ts): they never overlap. */
export const CLEARING_LOCK = 0x636c_6561_7269_6e67n; // "clearing"

/**
 * How long until `windowId` has closed by the window clock: 0 when it has. Refuses what is no
 * window (INVALID_WINDOW: negative, not an integer, more than an hour ahead) and a window that is
 * still open beyond the clock skew allowed (TICK_NOT_DUE).
 */
export function tickDueIn(windowId: number, clock: WindowClock): number {
  if (!Number.isSafeInteger(windowId) || windowId < 0) throw new TickRefusedError(EconomyErrorCode.InvalidWindow, windowId, "a window id is an integer ≥ 0");
  const now = (clock.now ?? Date.now)();
  const closesAt = (windowId + 1) * clock.windowMs;
  const wait = closesAt - now;
  if (wait <= 0) return 0;
  if (wait > (clock.maxAgeMs ?? MAX_TICK_AGE_MS)) throw new TickRefusedError(EconomyErrorCode.InvalidWindow, windowId, `it would close ${Math.round(wait / 1000)} s from now`);
  if (wait > (clock.skewMs ?? Math.min(TICK_SKEW_MS, clock.windowMs / 4))) throw new TickRefusedError(EconomyErrorCode.TickNotDue, windowId, `it is still open for ${wait} ms`);
  return wait;
}

type BidRow = {
  id: bigint;
  correlation_id: string | null;
  agent_id: string;
  resource: Resource | "bundle";
  quantity: bigint;
  price_per_unit: bigint;
  amount: bigint;
  stream_seq: bigint | null;
  window_id: bigint;
  components: Bundle | null;
};
type MarketRow = { resource: Resource; supply: bigint; price: bigint; floor_price: bigint; target_utilization: number };

/**
 * Clears window `windowId`. With a `clock` (the market.tick handler), the tick is checked first:
 * see tickDueIn; a tick for a window that closes within the clock skew waits for it; and a window
 * older than an hour that was never cleared is refused (INVALID_WINDOW). Without one (tests,
 * tools), any window id is cleared. The window length (the clock's, else `options.windowMs`, else
 * DEFAULT_WINDOW_MS) places the window a winning bundle runs in.
 */
export async function clearMarketWindow(sql: Sql, cause: Cause, windowId: number, clock?: WindowClock, options: { windowMs?: number } = {}): Promise<ClearingResult> {
  const windowMs = clock?.windowMs ?? options.windowMs ?? DEFAULT_WINDOW_MS;
  if (clock) {
    const wait = tickDueIn(windowId, clock);
    if (wait > 0) await sleep(wait);
  }
  const nothing = { windowId, duplicate: true, winners: 0, losers: 0, burned: 0, agents: [] };
  return inTransaction(sql, async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${CLEARING_LOCK.toString()}::bigint)`;
    const [last] = await tx<{ window_id: bigint | null }[]>`SELECT max(window_id) AS window_id FROM market_windows`;
    if (last?.window_id != null && BigInt(windowId) <= BigInt(last.window_id)) return nothing;
    if (clock && (clock.now ?? Date.now)() - (windowId + 1) * clock.windowMs > (clock.maxAgeMs ?? MAX_TICK_AGE_MS)) {
      throw new TickRefusedError(EconomyErrorCode.InvalidWindow, windowId, `it closed more than ${Math.round((clock.maxAgeMs ?? MAX_TICK_AGE_MS) / 1000)} s ago`);
    }
    const claimed = await tx`INSERT INTO market_windows (window_id, source_msg_id) VALUES (${windowId}, ${cause.sourceMsgId})
                             ON CONFLICT DO NOTHING RETURNING window_id`;
    if (!claimed.length) return nothing;

    // the lock order: accounts (sorted, one statement), then their bids, then market_state
    const agentRows = await tx<{ agent_id: string }[]>`SELECT DISTINCT agent_id FROM bids WHERE status = 'open' AND window_id <= ${windowId}`;
    const agentIds = agentRows.map((r) => r.agent_id);
    await lockAccounts(tx, [...agentIds.map(agentAccount), BURN_ACCOUNT]);
    // a bid of another agent placed since the first read is left open: it joins the next window
    const locked = await tx<BidRow[]>`
      SELECT id, correlation_id, agent_id, resource, quantity, price_per_unit, amount, stream_seq, window_id, components FROM bids
       WHERE status = 'open' AND window_id <= ${windowId} AND agent_id = ANY(${agentIds}::text[]) ORDER BY id FOR UPDATE`;
    // a termination releases its agent's open bids, and no bid of a terminated agent is placed
    // (both under the account lock); should one be open all the same, it is lost, never burned
    const terminated = await terminatedAgents(tx, agentIds);
    const orphans = locked.filter((r) => terminated.has(r.agent_id));
    const rows = locked.filter((r) => !terminated.has(r.agent_id));
    const market = await tx<MarketRow[]>`SELECT resource, supply, price, floor_price, target_utilization FROM market_state ORDER BY resource FOR UPDATE`;
    const byResource = new Map(market.map((m) => [m.resource, m]));
    const bids: MarketBid[] = rows.map((r) => {
      // bids without a stream sequence (requests) rank by id after sequenced ones of the same price
      const streamSeq = r.stream_seq === null ? Number.MAX_SAFE_INTEGER - 1e9 + Number(r.id) : Number(r.stream_seq);
      if (r.resource === "bundle") return { id: String(r.id), agentId: r.agent_id, bundle: r.components ?? {}, price: Number(r.amount), streamSeq };
      return { id: String(r.id), agentId: r.agent_id, resource: r.resource, quantity: Number(r.quantity), pricePerUnit: Number(r.price_per_unit), streamSeq };
    });
    const supply = Object.fromEntries(RESOURCES.map((r) => [r, Number(byResource.get(r)?.supply ?? 0)])) as Record<Resource, number>;
    const prices = Object.fromEntries(RESOURCES.map((r) => [r, Number(byResource.get(r)?.price ?? 0)])) as Record<Resource, number>;
    // bids were checked against the price when placed; the reserve is the floor at clearing
    const floors = Object.fromEntries(RESOURCES.map((r) => [r, Math.min(prices[r], Number(byResource.get(r)?.floor_price ?? 0))])) as Record<Resource, number>;
    // bundles and single bids rank by price per unit of value at the prices this window had
    const outcome = clearMarket(bids, supply, { reserves: floors, weights: prices });
    const cleared = outcome.resources;

    const events: EventInput[] = [];
    // facts about a bid belong to the bid's conversation (its correlation id); the tick is the cause
    const correlationOf = new Map(rows.map((r) => [String(r.id), r.correlation_id]));
    const agents = new Set<string>();
    let burned = 0n;
    let winners = 0;
    let losers = 0;
    for (const o of orphans) {
      losers++;
      agents.add(o.agent_id);
      await tx`UPDATE bids SET status = 'lost', reason = 'AGENT_TERMINATED', settled_at = now() WHERE id = ${o.id}`;
      const bundle = o.components ? { bundle: o.components } : {};
      events.push({ type: "bid_lost", to: o.agent_id, correlationId: o.correlation_id, payload: { bid_id: String(o.id), agent_id: o.agent_id, window_id: windowId, resource: o.resource, reason: "AGENT_TERMINATED", ...bundle } });
    }
    // a winning bundle runs in the window after this one: the one open as this one is cleared
    const runWindow = windowId + 1;
    for (const w of outcome.bundles.winners) {
      winners++;
      agents.add(w.agentId);
      const amount = BigInt(w.price);
      await tx`UPDATE bids SET status = 'won', allocated_quantity = quantity, settled_at = now() WHERE id = ${w.id}`;
      const receipt = await burn(tx, { sourceMsgId: `${cause.sourceMsgId}:burn:${w.id}`, from: w.agentId, amount, correlationId: cause.correlationId, causationId: cause.causationId, memo: { bid_id: w.id, window_id: windowId } });
      const limits = { cpu: w.bundle.cpu ?? 0, memory_mb: w.bundle.memory ?? 0, tokens: w.bundle.tokens ?? 0, attention: w.bundle.attention ?? 0 };
      const [row] = await tx<{ id: bigint }[]>`
        INSERT INTO resource_bundles (agent_id, window_id, cpu, memory_mb, tokens, attention, duration_ms, source_msg_id)
        VALUES (${w.agentId}, ${runWindow}, ${limits.cpu}, ${limits.memory_mb}, ${limits.tokens}, ${limits.attention}, ${windowMs}, ${`${cause.sourceMsgId}:bundle:${w.id}`})
        RETURNING id`;
      const bundleId = String(row!.id);
      await tx`UPDATE bids SET paid_tx_id = ${receipt.txId.toString()}, bundle_id = ${bundleId} WHERE id = ${w.id}`;
      burned += amount;
      const [bal] = await tx<{ balance: bigint }[]>`SELECT balance FROM accounts WHERE id = ${`agent:${w.agentId}`}`;
      const correlationId = correlationOf.get(w.id);
      events.push({
        type: "bundle_allocated",
        to: w.agentId,
        correlationId,
        payload: {
          bundle_id: bundleId,
          bid_id: w.id,
          agent_id: w.agentId,
          window_id: windowId,
          run_window_id: runWindow,
          window_start: runWindow * windowMs,
          window_end: (runWindow + 1) * windowMs,
          duration_ms: windowMs,
          ...limits,
          amount: toCredits(amount),
          runnable: isRunnable(w.bundle),
        },
      });
      events.push({ type: "credits_burned", to: w.agentId, correlationId, payload: { bid_id: w.id, agent_id: w.agentId, window_id: windowId, amount: toCredits(amount), balance: toCredits(bal!.balance) } });
    }
    for (const l of outcome.bundles.losers) {
      losers++;
      agents.add(l.bid.agentId);
      await tx`UPDATE bids SET status = 'lost', reason = ${l.reason}, settled_at = now() WHERE id = ${l.bid.id}`;
      events.push({
        type: "bid_lost",
        to: l.bid.agentId,
        correlationId: correlationOf.get(l.bid.id),
        payload: { bid_id: l.bid.id, agent_id: l.bid.agentId, window_id: windowId, resource: "bundle", reason: l.reason, bundle: l.bid.bundle, ...(l.short.length ? { short: l.short } : {}) },
      });
    }
    for (const r of RESOURCES) {
      const c = cleared[r];
      for (const w of c.winners) {
        winners++;
        agents.add(w.agentId);
        const amount = BigInt(bidAmount(w));
        // settle first: an open bid reserves its own amount, which the burn must be able to spend
        await tx`UPDATE bids SET status = 'won', allocated_quantity = quantity, settled_at = now() WHERE id = ${w.id}`;
        const receipt = await burn(tx, { sourceMsgId: `${cause.sourceMsgId}:burn:${w.id}`, from: w.agentId, amount, correlationId: cause.correlationId, causationId: cause.causationId, memo: { bid_id: w.id, window_id: windowId } });
        await tx`UPDATE bids SET paid_tx_id = ${receipt.txId.toString()} WHERE id = ${w.id}`;
        burned += amount;
        const [bal] = await tx<{ balance: bigint }[]>`SELECT balance FROM accounts WHERE id = ${`agent:${w.agentId}`}`;
        const base = { bid_id: w.id, agent_id: w.agentId, window_id: windowId };
        const correlationId = correlationOf.get(w.id);
        events.push({ type: "resources_allocated", to: w.agentId, correlationId, payload: { ...base, resource: r, quantity: w.quantity, price: toCredits(w.pricePerUnit), amount: toCredits(amount) } });
        events.push({ type: "credits_burned", to: w.agentId, correlationId, payload: { ...base, amount: toCredits(amount), balance: toCredits(bal!.balance) } });
      }
      for (const l of c.losers) {
        losers++;
        agents.add(l.bid.agentId);
        await tx`UPDATE bids SET status = 'lost', reason = ${l.reason}, settled_at = now() WHERE id = ${l.bid.id}`;
        events.push({ type: "bid_lost", to: l.bid.agentId, correlationId: correlationOf.get(l.bid.id), payload: { bid_id: l.bid.id, agent_id: l.bid.agentId, window_id: windowId, resource: r, reason: l.reason } });
      }
      const m = byResource.get(r);
      if (!m) continue;
      // bundles' components count like single bids' quantities: in demand, allocation, utilization
      const demand = bids.reduce((s, b) => s + quantityOf(b, r), 0);
      const price = Number(m.price);
      const next = nextPrice(price, c.utilization, { target: m.target_utilization, floor: Number(m.floor_price) });
      await tx`UPDATE market_state SET price = ${next}, utilization = ${c.utilization}, window_id = ${windowId}, updated_at = now() WHERE resource = ${r}`;
      await tx`INSERT INTO market_prices (window_id, resource, supply, demand, allocated, utilization, price, next_price)
               VALUES (${windowId}, ${r}, ${c.supply}, ${demand}, ${c.allocated}, ${c.utilization}, ${price}, ${next})`;
      // an idle market at its floor changes nothing: no event for a price that did not move
      if (next !== price || demand > 0) events.push({
        type: "price_update",
        payload: { resource: r, window_id: windowId, price: toCredits(next), previous_price: toCredits(price), utilization: c.utilization, supply: c.supply, demand, allocated: c.allocated },
      });
    }
    if (bids.length) events.push({ type: "window_cleared", payload: { window_id: windowId, bids: bids.length, winners, burned: toCredits(burned) } });
    await tx`UPDATE market_windows SET summary = ${tx.json({ bids: bids.length, winners, losers, burned: burned.toString() })} WHERE window_id = ${windowId}`;
    await recordEvents(tx, cause, events);
    return { windowId, duplicate: false, winners, losers, burned: toCredits(burned), agents: [...agents] };
  });
}
