import type { Sql, TransactionSql } from "./db.ts";
import { recordCaused, type Cause, type EventInput, type Recorded } from "./events.ts";
import { CLEARING_LOCK } from "./clearing.ts";
import { EconomyError, EconomyErrorCode } from "./errors.ts";
import { agentAccount, inTransaction, lockAccounts, terminatedAgents } from "./ledger.ts";
import { formatCredits, toCredits, toMicro } from "./money.ts";
import { bundleProblem, bundleValue, componentsOf, type Bundle, type Resource } from "./auction.ts";

// Placing bids: checked and recorded under the agents' account locks, so two bids of one agent can
// never both spend the same credits. An accepted bid reserves its amount until its window clears;
// a refused one is recorded too (with its reason), so a redelivery gives the same answer.
//
// Bids are placed in groups ("group commit"): bids arriving together in one worker share one
// transaction — one lock round, one reservation read, one multi-row insert — and each still gets
// its own answer, in arrival order. Used by the market.bid work queue and market.execute_trade.
//
// A bundle bid (several resources at one price, won all together or not at all: economy/auction.ts)
// is checked like a single bid — its price against what its components cost at the market's
// prices, each component against its supply, the whole price against the available credits — and
// stored as a `bids` row with resource "bundle", quantity 1 and price_per_unit = amount = its
// price, so that every sum of open bids (reservations, termination, the ledger check) counts it.

export type SingleBidInput = { agentId: string; resource: Resource; quantity: number; price: number; streamSeq?: number };
/** `price` is credits for the whole bundle. */
export type BundleBidInput = { agentId: string; bundle: Bundle; price: number; streamSeq?: number };
export type BidInput = SingleBidInput | BundleBidInput;

function isBundleInput(input: BidInput): input is BundleBidInput {
  return "bundle" in input && input.bundle !== undefined;
}

export type RejectReason = "UNKNOWN_AGENT" | "AGENT_TERMINATED" | "INSUFFICIENT_FUNDS" | "BELOW_MARKET_PRICE" | "EXCEEDS_SUPPLY" | "INVALID_BID";

export type BidResult =
  | { status: "placed"; bidId: string; windowId: number; amount: number; duplicate: boolean; balance: number; reserved: number }
  | { status: "rejected"; reason: RejectReason; message: string; duplicate: boolean };

export type BidRequest = { cause: Cause; input: BidInput; windowId: number };

/**
 * The largest bid amount, 10⁹ credits: every micro-credit amount below 10¹⁵ has at most 15
 * significant digits, which a double holds exactly, so its events can state it in credits.
 */
const MAX_BID_MICRO = 10n ** 15n - 1n;

type Prior = { source_msg_id: string; id: bigint; status: string; reason: string | null; window_id: bigint; amount: bigint };

/** The bids already recorded under these source msg ids, by id. */
async function priorBids(tx: TransactionSql, ids: string[]): Promise<Map<string, Prior>> {
  const rows = await tx<Prior[]>`SELECT source_msg_id, id, status, reason, window_id, amount FROM bids WHERE source_msg_id = ANY(${ids}::text[])`;
  return new Map(rows.map((p) => [p.source_msg_id, p]));
}

/** Places a group of bids in one transaction; results in the order of `requests`. */
export async function placeBids(sql: Sql, requests: BidRequest[], recorded?: Recorded[]): Promise<BidResult[]> {
  return inTransaction(sql, async (tx) => {
    // the clearing lock, shared: bid groups run side by side but never beside a clearing, so a bid
    // for a window that was cleared meanwhile (its handler started before the tick) is seen to be
    // late here and joins the next window instead of landing in one that will never clear again
    await tx`SELECT pg_advisory_xact_lock_shared(${CLEARING_LOCK.toString()}::bigint)`;
    const [cleared] = await tx<{ window_id: bigint | null }[]>`SELECT max(window_id) AS window_id FROM market_windows`;
    const nextOpen = cleared?.window_id == null ? -Infinity : Number(cleared.window_id) + 1;
    requests = requests.map((r) => (r.windowId < nextOpen ? { ...r, windowId: nextOpen } : r));
    // the agents' accounts first (the lock order, economy/ledger.ts lockAccounts): a command's
    // agent is in its subject, so a redelivery handled by another worker at the same moment waits
    // here and then finds the first one's row below
    const agents = [...new Set(requests.map((r) => r.input.agentId))];
    const balances = await lockAccounts(tx, agents.map(agentAccount));
    // read under the account locks, which a termination holds while it sets the status
    const terminated = await terminatedAgents(tx, agents);
    const ids = requests.map((r) => r.cause.sourceMsgId);
    const prior = await priorBids(tx, ids);
    // refusals without a bid row (unknown or terminated agent, unreadable price) are known by their event
    const refused = new Map(
      (
        await tx<{ source_msg_id: string; reason: string; message: string }[]>`
          SELECT source_msg_id, envelope->'payload'->>'reason' AS reason, envelope->'payload'->>'message' AS message
            FROM outbox WHERE source_msg_id = ANY(${ids}::text[]) AND envelope->>'type' = 'bid_rejected'`
      ).map((r) => [r.source_msg_id, r]),
    );
    const reservedRows = await tx<{ agent_id: string; reserved: bigint }[]>`
      SELECT agent_id, sum(amount)::bigint AS reserved FROM bids WHERE agent_id = ANY(${agents}::text[]) AND status = 'open' GROUP BY agent_id`;
    const reserved = new Map(reservedRows.map((r) => [r.agent_id, BigInt(r.reserved)]));
    const market = new Map(
      (await tx<{ resource: string; price: bigint; supply: bigint }[]>`SELECT resource, price, supply FROM market_state`).map((m) => [m.resource, m]),
    );

    const results: BidResult[] = [];
    const inserts: {
      i: number;
      agent: string;
      windowId: number;
      resource: string;
      quantity: number;
      ppu: bigint;
      amount: bigint;
      components: Bundle | null;
      status: string;
      reason: string | null;
      seq: number | null;
      src: string;
      corr: string;
    }[] = [];
    const events: { i: number; event: EventInput }[] = [];
    const firstOf = new Map<string, number>();
    const repeats: [number, number][] = [];

    requests.forEach(({ cause, input, windowId }, i) => {
      const src = cause.sourceMsgId;
      const p = prior.get(src);
      if (p) {
        results[i] = priorResult(p, balances.get(agentAccount(input.agentId)) ?? 0n, reserved.get(input.agentId) ?? 0n);
        return;
      }
      const first = firstOf.get(src);
      if (first !== undefined) {
        repeats.push([i, first]); // the same command twice in one group: one answer
        return;
      }
      const r = refused.get(src);
      if (r) {
        results[i] = { status: "rejected", reason: r.reason as RejectReason, message: r.message, duplicate: true };
        return;
      }
      firstOf.set(src, i);
      const bundle = isBundleInput(input) ? input.bundle : null;
      // what the row says the bid is for: a resource, or a bundle of one unit at its whole price
      const resource = bundle ? "bundle" : (input as SingleBidInput).resource;
      const quantity = bundle ? 1 : (input as SingleBidInput).quantity;
      // a bid's refusal is its own: nothing about one bid may fail the group's transaction (an
      // amount beyond BIGINT would, in the insert; one beyond a double's precision, in its event)
      const reject = (reason: RejectReason, message: string, amount?: bigint, ppu?: bigint) => {
        const credits = amount !== undefined && amount <= MAX_BID_MICRO ? toCredits(amount) : undefined;
        if (credits !== undefined && ppu !== undefined && balances.has(agentAccount(input.agentId))) {
          inserts.push({ i, agent: input.agentId, windowId, resource, quantity, ppu, amount: amount!, components: bundle, status: "rejected", reason, seq: input.streamSeq ?? null, src, corr: cause.correlationId });
        }
        events.push({ i, event: { type: "bid_rejected", payload: { agent_id: input.agentId, reason, message, resource, ...(credits !== undefined ? { amount: credits } : {}) } } });
        results[i] = { status: "rejected", reason, message, duplicate: false };
      };
      if (bundle) {
        let amount: bigint;
        try {
          amount = toMicro(input.price);
        } catch (err) {
          return reject("INVALID_BID", (err as Error).message);
        }
        const problem = amount <= 0n ? "the price must be positive" : bundleProblem(bundle);
        if (problem) return reject("INVALID_BID", problem);
        if (amount > MAX_BID_MICRO) return reject("INVALID_BID", `the bundle's price is ${formatCredits(amount)} credits, more than a bid can be`);
        const bal = balances.get(agentAccount(input.agentId));
        if (bal === undefined) return reject("UNKNOWN_AGENT", `agent ${input.agentId} is not known`);
        if (terminated.has(input.agentId)) return reject("AGENT_TERMINATED", `agent ${input.agentId} is terminated: it places no bids`);
        const parts = componentsOf(bundle);
        const missing = parts.find((r) => !market.has(r));
        if (missing) return reject("INVALID_BID", `resource ${missing} has no market`, amount, amount);
        const atPrice = bundleValue(bundle, Object.fromEntries(parts.map((r) => [r, BigInt(market.get(r)!.price)])));
        if (amount < atPrice) return reject("BELOW_MARKET_PRICE", `bundle price ${input.price} is below what its resources cost at the market's prices, ${formatCredits(atPrice)}`, amount, amount);
        const beyond = parts.find((r) => BigInt(bundle[r]!) > BigInt(market.get(r)!.supply));
        if (beyond) return reject("EXCEEDS_SUPPLY", `${bundle[beyond]} units of ${beyond} asked; the window's supply is ${market.get(beyond)!.supply}`, amount, amount);
        const held = reserved.get(input.agentId) ?? 0n;
        if (bal - held < amount) return reject("INSUFFICIENT_FUNDS", `bid of ${formatCredits(amount)} credits; ${formatCredits(bal - held)} available`, amount, amount);
        reserved.set(input.agentId, held + amount);
        inserts.push({ i, agent: input.agentId, windowId, resource, quantity, ppu: amount, amount, components: bundle, status: "open", reason: null, seq: input.streamSeq ?? null, src, corr: cause.correlationId });
        return;
      }
      const single = input as SingleBidInput;
      let ppu: bigint;
      try {
        ppu = toMicro(input.price);
      } catch (err) {
        return reject("INVALID_BID", (err as Error).message);
      }
      if (ppu <= 0n || !Number.isSafeInteger(single.quantity) || single.quantity <= 0) return reject("INVALID_BID", "quantity must be a positive integer and price positive");
      const amount = ppu * BigInt(single.quantity);
      if (amount > MAX_BID_MICRO) return reject("INVALID_BID", `quantity × price is ${formatCredits(amount)} credits, more than a bid can be`);
      const bal = balances.get(agentAccount(input.agentId));
      if (bal === undefined) return reject("UNKNOWN_AGENT", `agent ${input.agentId} is not known`);
      // no row: a terminated agent's refused bid is known by its event, like an unknown agent's
      if (terminated.has(input.agentId)) return reject("AGENT_TERMINATED", `agent ${input.agentId} is terminated: it places no bids`);
      const m = market.get(single.resource);
      if (!m) return reject("INVALID_BID", `resource ${single.resource} has no market`, amount, ppu);
      if (ppu < BigInt(m.price)) return reject("BELOW_MARKET_PRICE", `bid ${input.price} per unit is below the market price ${formatCredits(m.price)}`, amount, ppu);
      if (BigInt(single.quantity) > BigInt(m.supply)) return reject("EXCEEDS_SUPPLY", `${single.quantity} units asked; the window's supply is ${m.supply}`, amount, ppu);
      const held = reserved.get(input.agentId) ?? 0n;
      if (bal - held < amount) return reject("INSUFFICIENT_FUNDS", `bid of ${formatCredits(amount)} credits; ${formatCredits(bal - held)} available`, amount, ppu);
      reserved.set(input.agentId, held + amount);
      inserts.push({ i, agent: input.agentId, windowId, resource, quantity, ppu, amount, components: null, status: "open", reason: null, seq: input.streamSeq ?? null, src, corr: cause.correlationId });
    });

    if (inserts.length) {
      const rows = await tx<{ id: bigint; source_msg_id: string }[]>`
        INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, status, reason, stream_seq, source_msg_id, correlation_id, settled_at, components)
        SELECT agent_id, window_id, resource, quantity, ppu, amount, status, reason, seq, src, corr, settled, components::jsonb FROM unnest(
          ${inserts.map((x) => x.agent)}::text[], ${inserts.map((x) => x.windowId)}::bigint[], ${inserts.map((x) => x.resource)}::text[],
          ${inserts.map((x) => x.quantity)}::bigint[], ${inserts.map((x) => x.ppu.toString())}::bigint[], ${inserts.map((x) => x.amount.toString())}::bigint[],
          ${inserts.map((x) => x.status)}::text[], ${inserts.map((x) => x.reason)}::text[], ${inserts.map((x) => x.seq)}::bigint[],
          ${inserts.map((x) => x.src)}::text[], ${inserts.map((x) => x.corr)}::text[],
          ${inserts.map((x) => (x.status === "open" ? null : new Date().toISOString()))}::timestamptz[],
          ${inserts.map((x) => (x.components ? JSON.stringify(x.components) : null))}::text[])
          AS t(agent_id, window_id, resource, quantity, ppu, amount, status, reason, seq, src, corr, settled, components)
        ON CONFLICT (source_msg_id) DO NOTHING
        RETURNING id, source_msg_id`;
      const idOf = new Map(rows.map((r) => [r.source_msg_id, String(r.id)]));
      // a row that is not ours: the same msg id on another agent's bid, committed meanwhile — that one is the answer
      const lost = inserts.filter((x) => !idOf.has(x.src)).map((x) => x.src);
      if (lost.length) {
        const theirs = await priorBids(tx, lost);
        for (const x of inserts.filter((y) => !idOf.has(y.src))) {
          const p = theirs.get(x.src);
          if (!p) throw new EconomyError(EconomyErrorCode.Invariant, `bid ${x.src} was neither inserted nor found`);
          results[x.i] = priorResult(p, 0n, 0n);
          x.status = "taken";
        }
        for (let k = events.length - 1; k >= 0; k--) if (inserts.some((x) => x.status === "taken" && x.i === events[k]!.i)) events.splice(k, 1);
      }
      for (const x of inserts) {
        if (x.status !== "open") continue;
        const { input, windowId } = requests[x.i]!;
        const bidId = idOf.get(x.src)!;
        const bal = balances.get(agentAccount(x.agent))!;
        results[x.i] = { status: "placed", bidId, windowId, amount: toCredits(x.amount), duplicate: false, balance: toCredits(bal), reserved: toCredits(reserved.get(x.agent) ?? 0n) };
        events.push({
          i: x.i,
          event: {
            type: "bid_placed",
            payload: { bid_id: bidId, agent_id: x.agent, window_id: windowId, resource: x.resource as Resource | "bundle", quantity: x.quantity, price: input.price, amount: toCredits(x.amount), ...(x.components ? { bundle: x.components } : {}) },
          },
        });
      }
    }
    for (const [i, first] of repeats) results[i] = { ...results[first]!, duplicate: true };
    events.sort((a, b) => a.i - b.i);
    const sink: Recorded[] = [];
    await recordCaused(tx, events.map(({ i, event }) => ({ cause: requests[i]!.cause, event })), sink);
    // a retried transaction rebuilds these; only the committed attempt's reach the caller
    recorded?.splice(0, recorded.length, ...sink);
    return results;
  });
}

function priorResult(row: Prior, balance: bigint, reserved: bigint): BidResult {
  if (row.status === "rejected") return { status: "rejected", reason: (row.reason ?? "INVALID_BID") as RejectReason, message: `bid refused: ${row.reason}`, duplicate: true };
  return { status: "placed", bidId: String(row.id), windowId: Number(row.window_id), amount: toCredits(row.amount), duplicate: true, balance: toCredits(balance), reserved: toCredits(reserved) };
}

/** One bid, in its own transaction. */
export async function placeBid(sql: Sql, cause: Cause, input: BidInput, windowId: number): Promise<BidResult> {
  return (await placeBids(sql, [{ cause, input, windowId }]))[0]!;
}

/**
 * A bid's answer and the events its group recorded for it, to publish after commit. A duplicate
 * (the same command twice in a group, or redelivered) publishes from the outbox instead.
 */
export type PlacedBid = { result: BidResult; events: Recorded[] };

/**
 * Collects the bids that arrive while a group is being written and writes them as the next group:
 * at most one transaction in flight per batcher, so groups grow with load and a lone bid waits
 * for nobody. Each bid's promise resolves after its group commits, with its own answer and events.
 */
export class BidBatcher {
  readonly #sql: () => Promise<Sql>;
  readonly #max: number;
  #queue: { req: BidRequest; resolve: (r: PlacedBid) => void; reject: (e: unknown) => void }[] = [];
  #running = false;

  constructor(sql: () => Promise<Sql>, max = 1024) {
    this.#sql = sql;
    this.#max = max;
  }

  place(req: BidRequest): Promise<PlacedBid> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ req, resolve, reject });
      if (!this.#running) {
        this.#running = true;
        // let the bids that arrive in this event-loop turn join the first group
        setImmediate(() => void this.#drain());
      }
    });
  }

  async #drain(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length) {
        const group = this.#queue.splice(0, this.#max);
        try {
          const sql = await this.#sql();
          const recorded: Recorded[] = [];
          const results = await placeBids(sql, group.map((g) => g.req), recorded);
          const bySource = new Map<string, Recorded[]>();
          for (const r of recorded) {
            const list = bySource.get(r.sourceMsgId);
            if (list) list.push(r);
            else bySource.set(r.sourceMsgId, [r]);
          }
          group.forEach((g, i) => g.resolve({ result: results[i]!, events: bySource.get(g.req.cause.sourceMsgId) ?? [] }));
        } catch (err) {
          group.forEach((g) => g.reject(err));
        }
      }
    } finally {
      this.#running = false;
    }
  }
}
