import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  amountOf,
  bidAmount,
  clearMarket,
  componentsOf,
  quantityOf,
  RESOURCES,
  type AuctionBid,
  type Bundle,
  type BundleBid,
  type Clearing,
  type MarketBid,
  type Resource,
} from "../economy/auction.ts";

// Bundles and single bids cleared in one pass (economy/auction.ts clearMarket): the worked example
// of docs/economy.md, then properties — supply never exceeded, no bundle partly allocated, the same
// result in any input order, single bids alone cleared exactly as the single-resource rule did,
// revenue = Σ winners' amounts, every bid a winner or a loser with a reason.

const µ = (credits: number) => Math.round(credits * 1_000_000);
const single = (id: string, resource: Resource, quantity: number, pricePerUnit: number, streamSeq: number): AuctionBid => ({ id, agentId: id, resource, quantity, pricePerUnit, streamSeq });
const bundle = (id: string, b: Bundle, price: number, streamSeq: number): BundleBid => ({ id, agentId: id, bundle: b, price, streamSeq });

/**
 * The rule for single bids as it was before bundles (economy/auction.ts at dd305fa), written out
 * here as the reference the combined clearing must reproduce when there are no bundles.
 */
function singleResourceReference(resource: Resource, supply: number, bids: readonly AuctionBid[], reserve: number): Clearing {
  const byPriority = (a: AuctionBid, b: AuctionBid) => b.pricePerUnit - a.pricePerUnit || a.streamSeq - b.streamSeq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
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
  return { resource, supply, winners, losers, allocated, utilization: supply > 0 ? allocated / supply : 0, revenue: winners.reduce((s, b) => s + bidAmount(b), 0) };
}

describe("bundles in the auction", () => {
  it("the worked example of docs/economy.md", () => {
    const supply = { cpu: 2000, memory: 4096, tokens: 0, attention: 0 };
    const prices = { cpu: µ(0.001), memory: µ(0.0005) };
    const floors = { cpu: µ(0.0001), memory: µ(0.00005) };
    const bids: MarketBid[] = [
      bundle("alice", { cpu: 1000, memory: 2048 }, µ(3), 1), // value 2.024 → 1.48 per credit of value
      single("bob", "cpu", 1500, µ(0.002), 2), //                                 2.0
      bundle("carol", { cpu: 500, memory: 1024 }, µ(1.2), 3), // value 1.012 →   1.19
      single("dave", "memory", 3000, µ(0.0006), 4), //                            1.2
      bundle("erin", { cpu: 400, memory: 512 }, µ(0.7), 5), //  value 0.656 →   1.07
    ];
    const c = clearMarket(bids, supply, { reserves: floors, weights: prices });
    assert.deepEqual(c.resources.cpu.winners.map((b) => b.id), ["bob"]);
    assert.deepEqual(c.resources.memory.winners.map((b) => b.id), ["dave"]);
    assert.deepEqual(c.bundles.winners.map((b) => b.id), ["carol"]);
    assert.deepEqual(c.bundles.losers.map((l) => [l.bid.id, l.reason, l.short]), [["alice", "OUTBID", ["cpu"]], ["erin", "OUTBID", ["cpu", "memory"]]]);
    assert.equal(c.resources.cpu.allocated, 2000);
    assert.equal(c.resources.memory.allocated, 3000 + 1024, "alice's memory is not held for her: dave and carol have it");
    assert.equal(c.revenue, µ(3) + µ(1.8) + µ(1.2));
  });

  it("a bundle below the reserve, or beyond a resource's supply, loses and takes nothing", () => {
    const supply = { cpu: 1000, memory: 1000, tokens: 10, attention: 1 };
    const c = clearMarket(
      [bundle("cheap", { cpu: 100, memory: 100 }, 1999, 1), bundle("huge", { cpu: 100, attention: 2 }, 10_000, 2), single("s", "cpu", 1000, 10, 3)],
      supply,
      { reserves: { cpu: 10, memory: 10 } },
    );
    assert.deepEqual(c.bundles.losers.map((l) => [l.bid.id, l.reason, l.short]), [["huge", "EXCEEDS_SUPPLY", ["attention"]], ["cheap", "BELOW_RESERVE", []]]);
    assert.deepEqual(c.resources.cpu.winners.map((b) => b.id), ["s"]);
  });

  it("ranks exactly: prices and values beyond a double's precision, ties by stream sequence then id", () => {
    const big = 999_999_999_999_999; // the largest bid, micro-credits
    const c = clearMarket(
      [bundle("b", { cpu: 3, memory: 3 }, big - 1, 7), bundle("a", { cpu: 3, memory: 3 }, big, 9), bundle("t2", { cpu: 1, memory: 1 }, 10, 5), bundle("t1", { cpu: 1, memory: 1 }, 10, 5)],
      { cpu: 4, memory: 4, tokens: 0, attention: 0 },
      { weights: { cpu: 1_000_000_007, memory: 999_999_937 } },
    );
    assert.deepEqual(c.bundles.winners.map((b) => b.id), ["a", "t1"]);
    assert.deepEqual(c.bundles.losers.map((l) => l.bid.id), ["b", "t2"]);
  });

  // ---- properties ----------------------------------------------------------------------------

  const arbBundle = fc
    .record({ cpu: fc.integer({ min: 0, max: 300 }), memory: fc.integer({ min: 0, max: 300 }), tokens: fc.integer({ min: 0, max: 300 }), attention: fc.integer({ min: 0, max: 3 }) })
    .map((r) => Object.fromEntries(Object.entries(r).filter(([, q]) => q > 0)) as Bundle)
    .filter((b) => componentsOf(b).length > 0);
  const arbSingle = fc.record({ kind: fc.constant("single" as const), resource: fc.constantFrom(...RESOURCES), quantity: fc.integer({ min: 1, max: 200 }), pricePerUnit: fc.integer({ min: 1, max: 50 }) });
  const arbBundled = fc.record({ kind: fc.constant("bundle" as const), bundle: arbBundle, price: fc.integer({ min: 1, max: 20_000 }) });
  type Row = { kind: "single"; resource: Resource; quantity: number; pricePerUnit: number } | { kind: "bundle"; bundle: Bundle; price: number };
  const toBid = (r: Row & { seq: number }, i: number): MarketBid => {
    const b = r.kind === "single" ? single(`b${i}`, r.resource, r.quantity, r.pricePerUnit, r.seq) : bundle(`b${i}`, r.bundle, r.price, r.seq);
    return { ...b, agentId: `a${i % 5}` };
  };
  // stream sequences may repeat (bids placed by request have none): the id breaks those ties
  const arbBids = (kinds: fc.Arbitrary<Row>) => fc.array(fc.tuple(kinds, fc.integer({ min: 1, max: 30 })).map(([k, seq]) => ({ ...k, seq })), { maxLength: 40 }).map((rows) => rows.map(toBid));
  const arbSupply = fc.record({ cpu: fc.integer({ min: 0, max: 600 }), memory: fc.integer({ min: 0, max: 600 }), tokens: fc.integer({ min: 0, max: 600 }), attention: fc.integer({ min: 0, max: 4 }) });
  const arbPerResource = (max: number) => fc.record({ cpu: fc.integer({ min: 0, max }), memory: fc.integer({ min: 0, max }), tokens: fc.integer({ min: 0, max }), attention: fc.integer({ min: 0, max }) });
  const arbTerms = fc.record({ reserves: arbPerResource(30), weights: arbPerResource(60) });

  it("never exceeds a resource's supply; a winning bundle gets every component, a losing one nothing", () => {
    fc.assert(
      fc.property(arbBids(fc.oneof(arbSingle, arbBundled)), arbSupply, arbTerms, (bids, supply, terms) => {
        const c = clearMarket(bids, supply, terms);
        for (const r of RESOURCES) {
          const given = c.resources[r].winners.reduce((s, b) => s + b.quantity, 0) + c.bundles.winners.reduce((s, b) => s + (b.bundle[r] ?? 0), 0);
          assert.equal(c.resources[r].allocated, given, `${r}: allocated is what the winners got, every component of each winning bundle`);
          assert.ok(given <= supply[r], `${r}: ${given} allocated of ${supply[r]}`);
          assert.equal(c.resources[r].utilization, supply[r] > 0 ? given / supply[r] : 0);
        }
        // a bundle that lost could not have had every component: at its turn one did not fit in
        // what the bids ranked ahead of it that won had left (or it offered less than the reserve)
        const won = new Set([...c.bundles.winners.map((b) => b.id), ...RESOURCES.flatMap((r) => c.resources[r].winners.map((b) => b.id))]);
        const order = rankOrder(bids, terms.weights);
        for (const l of c.bundles.losers) {
          if (l.reason === "BELOW_RESERVE") {
            assert.ok(componentsOf(l.bid.bundle).reduce((s, r) => s + l.bid.bundle[r]! * terms.reserves[r], 0) > l.bid.price);
            continue;
          }
          assert.ok(l.short.length > 0);
          const ahead = order.slice(0, order.findIndex((b) => b.id === l.bid.id)).filter((b) => won.has(b.id));
          for (const r of l.short) {
            const taken = ahead.reduce((s, b) => s + quantityOf(b, r), 0);
            assert.ok(l.bid.bundle[r]! > supply[r] - taken, `bundle ${l.bid.id}'s ${r} would have fitted`);
          }
          if (l.reason === "EXCEEDS_SUPPLY") for (const r of l.short) assert.ok(l.bid.bundle[r]! > supply[r]);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("every bid is once a winner or once a loser with a reason; revenue is Σ winners' amounts; winners meet the reserve", () => {
    fc.assert(
      fc.property(arbBids(fc.oneof(arbSingle, arbBundled)), arbSupply, arbTerms, (bids, supply, terms) => {
        const c = clearMarket(bids, supply, terms);
        const winners: MarketBid[] = [...c.bundles.winners, ...RESOURCES.flatMap((r) => c.resources[r].winners)];
        const losers = [...c.bundles.losers, ...RESOURCES.flatMap((r) => c.resources[r].losers)];
        const seen = [...winners.map((b) => b.id), ...losers.map((l) => l.bid.id)];
        assert.deepEqual([...seen].sort(), bids.map((b) => b.id).sort(), "each bid exactly once");
        for (const l of losers) assert.ok(["OUTBID", "EXCEEDS_SUPPLY", "BELOW_RESERVE"].includes(l.reason));
        for (const r of RESOURCES) for (const l of c.resources[r].losers) assert.equal(l.bid.resource, r);
        assert.equal(c.revenue, winners.reduce((s, b) => s + amountOf(b), 0));
        for (const w of winners) {
          const atReserve = RESOURCES.reduce((s, r) => s + quantityOf(w, r) * terms.reserves[r], 0);
          assert.ok(amountOf(w) >= atReserve, `${w.id} won below the reserve`);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("gives the same result whatever the order the bids come in", () => {
    const arb = arbBids(fc.oneof(arbSingle, arbBundled)).chain((bids) => fc.tuple(fc.constant(bids), fc.shuffledSubarray(bids, { minLength: bids.length, maxLength: bids.length })));
    fc.assert(
      fc.property(arb, arbSupply, arbTerms, ([bids, shuffled], supply, terms) => {
        assert.deepEqual(clearMarket(shuffled, supply, terms), clearMarket(bids, supply, terms));
      }),
      { numRuns: 1000 },
    );
  });

  it("single bids alone clear exactly as the single-resource rule did, whatever the weights", () => {
    fc.assert(
      fc.property(arbBids(arbSingle), arbSupply, arbTerms, (bids, supply, terms) => {
        const c = clearMarket(bids, supply, terms);
        for (const r of RESOURCES) assert.deepEqual(c.resources[r], singleResourceReference(r, supply[r], bids as AuctionBid[], terms.reserves[r]));
        assert.deepEqual(c.bundles, { winners: [], losers: [] });
      }),
      { numRuns: 1000 },
    );
  });

  it("a bundle of one resource competes with single bids by price per unit", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 50 }), (q, p1, p2) => {
        const c = clearMarket([single("s", "cpu", q, p1, 1), bundle("b", { cpu: q }, q * p2, 2)], { cpu: q, memory: 0, tokens: 0, attention: 0 }, { weights: { cpu: 7 } });
        const winner = c.resources.cpu.winners[0]?.id ?? c.bundles.winners[0]?.id;
        assert.equal(winner, p1 >= p2 ? "s" : "b");
      }),
      { numRuns: 300 },
    );
  });
});

/** The ranking, recomputed independently in exact fractions: price ÷ Σ quantity × max(1, weight). */
function rankOrder(bids: readonly MarketBid[], weights: Record<Resource, number>): MarketBid[] {
  const frac = (b: MarketBid): [bigint, bigint] => {
    const den = RESOURCES.reduce((s, r) => s + BigInt(quantityOf(b, r)) * BigInt(Math.max(1, weights[r])), 0n);
    return [BigInt(amountOf(b)), den > 0n ? den : 1n];
  };
  return [...bids].sort((a, b) => {
    const [an, ad] = frac(a);
    const [bn, bd] = frac(b);
    const x = an * bd;
    const y = bn * ad;
    return x > y ? -1 : x < y ? 1 : a.streamSeq - b.streamSeq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  });
}

