// One window's auction for one resource: pure and deterministic, so replaying the same bids gives
// the same allocation. Highest price per unit first; ties by stream sequence (earlier wins). A bid
// is filled whole or not at all: one that does not fit the supply left loses, and a smaller one
// after it may still fit. Winners pay what they bid (quantity × price per unit).

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

/** OUTBID: higher bids took the supply; EXCEEDS_SUPPLY: asks for more than there is at all. */
export type LossReason = "OUTBID" | "EXCEEDS_SUPPLY" | "BELOW_RESERVE";

export type Clearing = {
  resource: Resource;
  supply: number;
  winners: AuctionBid[];
  losers: { bid: AuctionBid; reason: LossReason }[];
  allocated: number;
  /** allocated / supply, 0 when there is no supply. */
  utilization: number;
  /** Σ winners' quantity × price, micro-credits: what is burned. */
  revenue: number;
};

export function byPriority(a: AuctionBid, b: AuctionBid): number {
  return b.pricePerUnit - a.pricePerUnit || a.streamSeq - b.streamSeq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export function bidAmount(b: Pick<AuctionBid, "quantity" | "pricePerUnit">): number {
  return b.quantity * b.pricePerUnit;
}

/**
 * Clears one resource. `reserve` is the lowest price per unit that can win (the market price at
 * clearing); bids below it lose with BELOW_RESERVE.
 */
export function clearResource(resource: Resource, supply: number, bids: readonly AuctionBid[], reserve = 0): Clearing {
  const sorted = bids.filter((b) => b.resource === resource).sort(byPriority);
  const winners: AuctionBid[] = [];
  const losers: Clearing["losers"] = [];
  let left = Math.max(0, supply);
  for (const bid of sorted) {
    if (bid.pricePerUnit < reserve) losers.push({ bid, reason: "BELOW_RESERVE" });
    else if (bid.quantity <= left) {
      winners.push(bid);
      left -= bid.quantity;
    } else losers.push({ bid, reason: bid.quantity > supply ? "EXCEEDS_SUPPLY" : "OUTBID" });
  }
  const allocated = supply - left;
  return {
    resource,
    supply,
    winners,
    losers,
    allocated,
    utilization: supply > 0 ? allocated / supply : 0,
    revenue: winners.reduce((sum, b) => sum + bidAmount(b), 0),
  };
}

/** Every resource of a window. */
export function clearWindow(
  bids: readonly AuctionBid[],
  supply: Readonly<Record<Resource, number>>,
  reserves: Partial<Readonly<Record<Resource, number>>> = {},
): Record<Resource, Clearing> {
  const out = {} as Record<Resource, Clearing>;
  for (const r of RESOURCES) out[r] = clearResource(r, supply[r] ?? 0, bids, reserves[r] ?? 0);
  return out;
}
