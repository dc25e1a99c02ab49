import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { bidAmount, clearResource, clearWindow, RESOURCES, type AuctionBid } from "../economy/auction.ts";
import { nextPrice } from "../economy/pricing.ts";

// The auction and the price rule are pure: checked here by examples and by properties.

const bid = (id: string, quantity: number, pricePerUnit: number, streamSeq: number, resource: AuctionBid["resource"] = "cpu"): AuctionBid => ({
  id,
  agentId: `agent_${id}`,
  resource,
  quantity,
  pricePerUnit,
  streamSeq,
});

describe("auction", () => {
  it("gives scarce supply to the highest price per unit and charges what was bid", () => {
    const c = clearResource("cpu", 100, [bid("low", 100, 5, 1), bid("high", 100, 9, 2)]);
    assert.deepEqual(c.winners.map((b) => b.id), ["high"]);
    assert.deepEqual(c.losers.map((l) => [l.bid.id, l.reason]), [["low", "OUTBID"]]);
    assert.equal(c.revenue, 900);
    assert.equal(c.utilization, 1);
  });

  it("breaks ties by stream sequence, and lets a smaller bid use what is left", () => {
    const c = clearResource("cpu", 100, [bid("b", 60, 7, 20), bid("a", 60, 7, 10), bid("small", 40, 1, 30), bid("huge", 500, 50, 5)]);
    assert.deepEqual(c.winners.map((b) => b.id), ["a", "small"]);
    assert.deepEqual(c.losers.map((l) => [l.bid.id, l.reason]), [["huge", "EXCEEDS_SUPPLY"], ["b", "OUTBID"]]);
    assert.equal(c.allocated, 100);
  });

  it("refuses bids below the reserve price and ignores other resources", () => {
    const w = clearWindow([bid("x", 10, 3, 1), bid("m", 10, 3, 2, "memory")], { cpu: 100, memory: 100, tokens: 0, attention: 0 }, { cpu: 4 });
    assert.deepEqual(w.cpu.losers.map((l) => l.reason), ["BELOW_RESERVE"]);
    assert.deepEqual(w.memory.winners.map((b) => b.id), ["m"]);
    assert.equal(w.tokens.utilization, 0);
  });

  const arbBids = fc.array(
    fc.record({
      quantity: fc.integer({ min: 1, max: 200 }),
      pricePerUnit: fc.integer({ min: 1, max: 50 }),
      resource: fc.constantFrom(...RESOURCES),
    }),
    { maxLength: 40 },
  ).map((rows) => rows.map((r, i) => ({ ...r, id: `b${i}`, agentId: `a${i % 5}`, streamSeq: i + 1 })));

  it("never allocates beyond supply; winners outrank every loser that would have fitted; order of input is irrelevant", () => {
    fc.assert(
      fc.property(arbBids, fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 30 }), (bids, supply, reserve) => {
        const c = clearResource("cpu", supply, bids, reserve);
        const mine = bids.filter((b) => b.resource === "cpu");
        assert.equal(c.winners.length + c.losers.length, mine.length);
        assert.ok(c.allocated <= supply);
        assert.equal(c.allocated, c.winners.reduce((s, b) => s + b.quantity, 0));
        assert.equal(c.revenue, c.winners.reduce((s, b) => s + bidAmount(b), 0));
        for (const w of c.winners) assert.ok(w.pricePerUnit >= reserve);
        // an outbid loser could not fit in what was left after every bid that outranks it
        for (const l of c.losers.filter((x) => x.reason === "OUTBID")) {
          const ahead = c.winners.filter((w) => w.pricePerUnit > l.bid.pricePerUnit || (w.pricePerUnit === l.bid.pricePerUnit && w.streamSeq < l.bid.streamSeq));
          const takenAhead = ahead.reduce((s, b) => s + b.quantity, 0);
          assert.ok(l.bid.quantity > supply - takenAhead, `bid ${l.bid.id} would have fitted`);
        }
        const shuffled = [...bids].reverse();
        assert.deepEqual(clearResource("cpu", supply, shuffled, reserve).winners.map((b) => b.id), c.winners.map((b) => b.id));
      }),
      { numRuns: 1000 },
    );
  });
});

describe("pricing", () => {
  const rule = { target: 0.5, floor: 10 };

  it("raises under over-use, lowers under under-use, holds at the target, never below the floor", () => {
    assert.equal(nextPrice(1000, 1, rule), 1125);
    assert.equal(nextPrice(1000, 0, rule), 875);
    assert.equal(nextPrice(1000, 0.5, rule), 1000);
    assert.equal(nextPrice(11, 0, rule), 10);
    assert.equal(nextPrice(10, 0, rule), 10);
    assert.equal(nextPrice(8, 1, { target: 0.5, floor: 1 }), 9, "a small price still moves");
  });

  it("moves at most 12.5 % per window and in the direction of the utilization gap", () => {
    fc.assert(
      fc.property(fc.integer({ min: 100, max: 1e9 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0.05, max: 1, noNaN: true }), (p, u, target) => {
        const next = nextPrice(p, u, { target, floor: 1 });
        assert.ok(Math.abs(next - p) <= Math.ceil(p * 0.125) + 1, `${p} → ${next}`);
        if (u > target) assert.ok(next >= p);
        if (u < target) assert.ok(next <= p);
      }),
      { numRuns: 2000 },
    );
  });
});
