import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { placeBids, type BidRequest, type SingleBidInput } from "../economy/bids.ts";
import type { Cause } from "../economy/events.ts";
import { mint, openAccount } from "../economy/ledger.ts";
import { DEFAULT_MARKET, seedMarket } from "../economy/runtime.ts";
import { suiteScope } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";

// A group of bids is one transaction, but each bid has its own answer: refusals of every kind
// beside accepted bids, none failing the group; the same group again gives the same answers; the
// same command in two groups at once is placed once.

const cause = (id: string): Cause => ({ sourceMsgId: id, correlationId: id, causationId: id, from: "test" });
const bid = (id: string, agentId: string, resource: SingleBidInput["resource"], quantity: number, price: number): BidRequest => ({ cause: cause(id), input: { agentId, resource, quantity, price }, windowId: 7 });

describe("placing a group of bids", () => {
  const hooks = suiteScope(after);
  let db: TestDatabase;

  before(async () => {
    db = await startTestDatabase(hooks);
    await seedMarket(db.sql, DEFAULT_MARKET);
    for (const [agent, credits] of [["g1", 100_000_000n], ["g2", 1_000_000n]] as const) {
      await openAccount(db.sql, agent);
      await mint(db.sql, { sourceMsgId: `genesis-${agent}`, to: agent, amount: credits, kind: "genesis" });
    }
  });

  it("refusals of every kind beside accepted bids: each its own answer, the group commits", async () => {
    const group = [
      bid("b-ok-1", "g1", "cpu", 100, 0.002),
      bid("b-poor", "g2", "cpu", 1000, 0.01), // 10 credits, g2 has 1
      bid("b-huge", "g1", "tokens", 2 ** 50, 100_000), // beyond BIGINT
      bid("b-unknown", "nobody", "cpu", 10, 0.01),
      bid("b-below", "g1", "cpu", 10, 0.0001),
      bid("b-supply", "g1", "attention", 5, 2),
      bid("b-fine", "g2", "memory", 100, 0.001), // 0.1 credits: g2 can afford this one
      bid("b-ok-1", "g1", "cpu", 100, 0.002), // the same command twice in one group
    ];
    const results = await placeBids(db.sql, group);
    const summary = results.map((r) => (r.status === "placed" ? `placed${r.duplicate ? " (again)" : ""}` : r.reason));
    assert.deepEqual(summary, ["placed", "INSUFFICIENT_FUNDS", "INVALID_BID", "UNKNOWN_AGENT", "BELOW_MARKET_PRICE", "EXCEEDS_SUPPLY", "placed", "placed (again)"]);

    const rows = await db.sql<{ source_msg_id: string; status: string }[]>`SELECT source_msg_id, status FROM bids ORDER BY id`;
    assert.deepEqual(rows.map((r) => [r.source_msg_id, r.status]), [["b-ok-1", "open"], ["b-poor", "rejected"], ["b-below", "rejected"], ["b-supply", "rejected"], ["b-fine", "open"]]);
    const events = await db.sql<{ source_msg_id: string; type: string }[]>`SELECT source_msg_id, envelope->>'type' AS type FROM outbox ORDER BY seq`;
    assert.deepEqual(events.map((e) => `${e.source_msg_id} ${e.type}`), [
      "b-ok-1 bid_placed",
      "b-poor bid_rejected",
      "b-huge bid_rejected",
      "b-unknown bid_rejected",
      "b-below bid_rejected",
      "b-supply bid_rejected",
      "b-fine bid_placed",
    ]);

    // redelivered, as a group: the same answers, nothing new written
    const again = await placeBids(db.sql, group);
    assert.deepEqual(again.map((r) => (r.status === "placed" ? r.bidId : r.reason)), results.map((r) => (r.status === "placed" ? r.bidId : r.reason)));
    assert.ok(again.every((r) => r.duplicate));
    assert.equal((await db.sql`SELECT 1 FROM outbox`).length, events.length);
  });

  it("the same command in two groups at once is placed once, both answered alike", async () => {
    const same = bid("b-race", "g1", "memory", 10, 0.001);
    const [a, b] = await Promise.all([placeBids(db.sql, [same, bid("b-race-x", "g1", "cpu", 1, 0.002)]), placeBids(db.sql, [bid("b-race-y", "g1", "cpu", 1, 0.002), same])]);
    const first = a[0]!;
    const second = b[1]!;
    assert.equal(first.status, "placed");
    assert.equal(second.status, "placed");
    assert.equal(first.status === "placed" && second.status === "placed" && first.bidId === second.bidId, true);
    assert.equal([first.duplicate, second.duplicate].filter(Boolean).length, 1);
    assert.equal((await db.sql`SELECT 1 FROM bids WHERE source_msg_id = 'b-race'`).length, 1);
  });

  it("a bid for a window cleared while it was handled joins the next open window", async () => {
    const { clearMarketWindow } = await import("../economy/clearing.ts");
    await clearMarketWindow(db.sql, cause("late-tick-40"), 40);
    const [late] = await placeBids(db.sql, [{ ...bid("b-late", "g1", "cpu", 10, 0.01), windowId: 38 }]);
    assert.equal(late!.status, "placed");
    assert.equal((late as { windowId: number }).windowId, 41);
    const [row] = await db.sql<{ window_id: bigint }[]>`SELECT window_id FROM bids WHERE source_msg_id = 'b-late'`;
    assert.equal(Number(row!.window_id), 41);
    // and the next clearing takes it
    const r = await clearMarketWindow(db.sql, cause("late-tick-41"), 41);
    assert.ok(r.winners + r.losers >= 1);
    const [after41] = await db.sql<{ status: string }[]>`SELECT status FROM bids WHERE source_msg_id = 'b-late'`;
    assert.notEqual(after41!.status, "open");
  });
});
