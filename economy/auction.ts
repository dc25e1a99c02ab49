// One window's auction: pure and deterministic, so replaying the same bids gives the same
// allocation. Two kinds of bid take part in one pass:
//
// - a single bid asks for a quantity of one resource at a price per unit;
// - a bundle bid asks for several resources together (cpu and memory to run a container) at one
//   price for the whole: all of it or nothing, since an agent that wins memory and loses cpu has
//   paid for something it cannot use.
//
// Bids are ranked by price per unit of value, value being what the bid's quantities cost at the
// window's prices (its weights): price ÷ Σ quantity × weight. For a single bid that is its price
// per unit ÷ its resource's weight, so single bids of one resource rank by price per unit exactly
// as they did before bundles existed, whatever the weights. Ties go to the earlier stream sequence,
// then the smaller id. In that order each bid is filled whole or not at all: one below the reserve
// loses, one that does not fit what is left of every resource it asks for loses and takes nothing,
// and a smaller bid after it may still fit. Winners pay what they bid.

export const RESOURCES = ["cpu", "memory", "tokens", "attention"] as const;
export type Resource = (typeof RESOURCES)[number];

export type AuctionBid = {
  id: string;
  agentId: string;
  resource: Resource;
  /** Units asked for (cpu: millicores, memory: MiB, tokens: LLM tokens, attention: prompts). */
  quantity: number;
  /** Micro-credits per unit. */
  pricePerUnit: number;
  /** JetStream sequence of the bid command: the tie-breaker. */
  streamSeq: number;
};

/** Units of each resource a bundle asks for; an absent resource is none of it. */
export type Bundle = Partial<Record<Resource, number>>;

export type BundleBid = {
  id: string;
  agentId: string;
  bundle: Bundle;
  /** Micro-credits for the whole bundle. */
  price: number;
  streamSeq: number;
};

export type MarketBid = AuctionBid | BundleBid;

/** OUTBID: higher bids took the supply; EXCEEDS_SUPPLY: asks for more than there is at all; BELOW_RESERVE: offers less than the reserve. */
export type LossReason = "OUTBID" | "EXCEEDS_SUPPLY" | "BELOW_RESERVE";

export type Clearing = {
  resource: Resource;
  supply: number;
  /** The single bids of this resource that won. */
  winners: AuctionBid[];
  losers: { bid: AuctionBid; reason: LossReason }[];
  /** Units allocated, winning bundles' components included. */
  allocated: number;
  /** allocated / supply, 0 when there is no supply. */
  utilization: number;
  /** Σ single winners' quantity × price, micro-credits (a bundle's price is not split by resource). */
  revenue: number;
};

/** A bundle that lost, and which of its components did not fit (EXCEEDS_SUPPLY: beyond the supply; OUTBID: beyond what was left). */
export type BundleLoss = { bid: BundleBid; reason: LossReason; short: Resource[] };

export type MarketClearing = {
  resources: Record<Resource, Clearing>;
  bundles: { winners: BundleBid[]; losers: BundleLoss[] };
  /** Σ every winner's amount, single and bundle, micro-credits: what is burned. */
  revenue: number;
};

export type MarketTerms = {
  /** Lowest price per unit that can win, per resource (a bundle must offer Σ quantity × reserve). Default 0. */
  reserves?: Partial<Readonly<Record<Resource, number>>>;
  /** The value of a unit of each resource in the ranking, micro-credits; below 1 counts as 1. Default 1. */
  weights?: Partial<Readonly<Record<Resource, number>>>;
};

export function isBundle(b: MarketBid): b is BundleBid {
  return "bundle" in b;
}

export function bidAmount(b: Pick<AuctionBid, "quantity" | "pricePerUnit">): number {
  return b.quantity * b.pricePerUnit;
}

/** What a bid of either kind costs its agent if it wins, micro-credits. */
export function amountOf(b: MarketBid): number {
  return isBundle(b) ? b.price : bidAmount(b);
}

/** Units of `resource` a bid asks for. */
export function quantityOf(b: MarketBid, resource: Resource): number {
  if (isBundle(b)) return b.bundle[resource] ?? 0;
  return b.resource === resource ? b.quantity : 0;
}

/** The resources a bundle asks for, in catalogue order. */
export function componentsOf(bundle: Bundle): Resource[] {
  return RESOURCES.filter((r) => (bundle[r] ?? 0) > 0);
}

/** A bundle is runnable when it carries cpu and memory: what a container needs to be launched. */
export function isRunnable(bundle: Bundle): boolean {
  return (bundle.cpu ?? 0) > 0 && (bundle.memory ?? 0) > 0;
}

/**
 * Why `bundle` is no bundle, or null: an object naming at least one resource of the market, each
 * with a positive whole number of units, and nothing else (a misspelt resource must not leave a
 * bundle the agent pays for without what it meant to ask).
 */
export function bundleProblem(bundle: unknown): string | null {
  if (typeof bundle !== "object" || bundle === null || Array.isArray(bundle)) return "a bundle is an object of resources and quantities";
  const entries = Object.entries(bundle);
  for (const [r, q] of entries) {
    if (!(RESOURCES as readonly string[]).includes(r)) return `${r} is not a resource (${RESOURCES.join(", ")})`;
    if (!Number.isSafeInteger(q) || (q as number) <= 0) return `${r}: the quantity must be a positive integer`;
  }
  return entries.length ? null : "a bundle names at least one resource";
}

/** Σ quantity × price per unit over a bundle's components, in exact micro-credits. */
export function bundleValue(bundle: Bundle, perUnit: Partial<Readonly<Record<Resource, number | bigint>>>): bigint {
  let sum = 0n;
  for (const r of componentsOf(bundle)) sum += BigInt(bundle[r]!) * BigInt(perUnit[r] ?? 0);
  return sum;
}

function byId(a: MarketBid, b: MarketBid): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A bid's rank as the fraction price ÷ value, compared by cross-multiplication: exact, no rounding. */
type Ranked = { bid: MarketBid; num: bigint; den: bigint };

function rank(bid: MarketBid, weights: MarketTerms["weights"]): Ranked {
  const w = (r: Resource) => BigInt(Math.max(1, Math.trunc(weights?.[r] ?? 1)));
  if (!isBundle(bid)) return { bid, num: BigInt(bid.pricePerUnit), den: w(bid.resource) };
  let den = 0n;
  for (const r of componentsOf(bid.bundle)) den += BigInt(bid.bundle[r]!) * w(r);
  return { bid, num: BigInt(bid.price), den: den > 0n ? den : 1n };
}

function byRank(a: Ranked, b: Ranked): number {
  const x = a.num * b.den;
  const y = b.num * a.den;
  return x > y ? -1 : x < y ? 1 : a.bid.streamSeq - b.bid.streamSeq || byId(a.bid, b.bid);
}

/**
 * Clears a window: every resource's supply, single and bundle bids in one pass (the rule above).
 * Every bid ends as a winner or a loser with a reason, once.
 */
export function clearMarket(bids: readonly MarketBid[], supply: Readonly<Record<Resource, number>>, terms: MarketTerms = {}): MarketClearing {
  const sorted = bids.map((b) => rank(b, terms.weights)).sort(byRank);
  const reserve = (r: Resource) => terms.reserves?.[r] ?? 0;
  const total = (r: Resource) => supply[r] ?? 0;
  const left = Object.fromEntries(RESOURCES.map((r) => [r, Math.max(0, total(r))])) as Record<Resource, number>;
  const resources = Object.fromEntries(
    RESOURCES.map((r): [Resource, Clearing] => [r, { resource: r, supply: total(r), winners: [], losers: [], allocated: 0, utilization: 0, revenue: 0 }]),
  ) as Record<Resource, Clearing>;
  const bundles: MarketClearing["bundles"] = { winners: [], losers: [] };

  for (const { bid } of sorted) {
    if (!isBundle(bid)) {
      const c = resources[bid.resource];
      if (bid.pricePerUnit < reserve(bid.resource)) c.losers.push({ bid, reason: "BELOW_RESERVE" });
      else if (bid.quantity <= left[bid.resource]) {
        c.winners.push(bid);
        left[bid.resource] -= bid.quantity;
      } else c.losers.push({ bid, reason: bid.quantity > total(bid.resource) ? "EXCEEDS_SUPPLY" : "OUTBID" });
      continue;
    }
    const parts = componentsOf(bid.bundle);
    if (BigInt(bid.price) < bundleValue(bid.bundle, Object.fromEntries(parts.map((r) => [r, reserve(r)])))) {
      bundles.losers.push({ bid, reason: "BELOW_RESERVE", short: [] });
      continue;
    }
    const beyond = parts.filter((r) => bid.bundle[r]! > total(r));
    const short = parts.filter((r) => bid.bundle[r]! > left[r]);
    if (beyond.length) bundles.losers.push({ bid, reason: "EXCEEDS_SUPPLY", short: beyond });
    else if (short.length) bundles.losers.push({ bid, reason: "OUTBID", short });
    else {
      bundles.winners.push(bid);
      for (const r of parts) left[r] -= bid.bundle[r]!;
    }
  }

  let revenue = 0;
  for (const r of RESOURCES) {
    const c = resources[r];
    c.allocated = c.supply - left[r];
    c.utilization = c.supply > 0 ? c.allocated / c.supply : 0;
    c.revenue = c.winners.reduce((sum, b) => sum + bidAmount(b), 0);
    revenue += c.revenue;
  }
  for (const b of bundles.winners) revenue += b.price;
  return { resources, bundles, revenue };
}

/**
 * Clears one resource from single bids (those of other resources are ignored). `reserve` is the
 * lowest price per unit that can win; bids below it lose with BELOW_RESERVE.
 */
export function clearResource(resource: Resource, supply: number, bids: readonly AuctionBid[], reserve = 0): Clearing {
  const only = bids.filter((b) => b.resource === resource);
  return clearMarket(only, { cpu: 0, memory: 0, tokens: 0, attention: 0, [resource]: supply }, { reserves: { [resource]: reserve } }).resources[resource];
}

/** Every resource of a window, single bids only. */
export function clearWindow(
  bids: readonly AuctionBid[],
  supply: Readonly<Record<Resource, number>>,
  reserves: Partial<Readonly<Record<Resource, number>>> = {},
): Record<Resource, Clearing> {
  return clearMarket(bids, supply, { reserves }).resources;
}
