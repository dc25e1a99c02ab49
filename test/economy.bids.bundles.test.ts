import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { placeBids, type BidInput, type BidRequest } from "../economy/bids.ts";
import { clearMarketWindow } from "../economy/clearing.ts";
import type { Cause } from "../economy/events.ts";
import { agentBalance, checkLedger, mint, openAccount } from "../economy/ledger.ts";
import { DEFAULT_MARKET, seedMarket } from "../economy/runtime.ts";
import { suiteScope } from "./helpers/nats.ts";
import { testDatabaseFactory, type TestDatabase } from "./helpers/pg.ts";

// Bundle bids against PostgreSQL: placed like single bids (refusals with their codes, the whole
// price reserved, the same group again gives the same answers), cleared with them in one pass (the
// worked example of docs/economy.md, with the default market); a winner gets a resource_bundles row
// and one bundle_allocated carrying what the orchestrator launches with, and a tick delivered again
// writes neither a second time.

const cause = (id: string): Cause => ({ sourceMsgId: id, correlationId: `conv-${id}`, causationId: id, from: "test" });
const req = (id: string, input: BidInput, windowId = 7): BidRequest => ({ cause: cause(id), input, windowId });
const outcome = (r: Awaited<ReturnType<typeof placeBids>>[number]) => (r.status === "placed" ? `placed${r.duplicate ? " (again)" : ""}` : r.reason);
const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));

describe("bundle bids", () => {
  const hooks = suiteScope(after);
  const databases = testDatabaseFactory(hooks);

  async function market(agents: Record<string, number>): Promise<TestDatabase> {
    const db = await databases.create();
    hooks.after(() => db.drop());
    await seedMarket(db.sql, DEFAULT_MARKET);
    for (const [agent, credits] of Object.entries(agents)) {
      await openAccount(db.sql, agent);
      await mint(db.sql, { sourceMsgId: `genesis-${agent}`, to: agent, amount: BigInt(credits) * 1_000_000n, kind: "genesis" });
    }
    return db;
  }

  it("are placed like single bids: each refusal its code, the whole price reserved, again the same answers", async () => {
    const db = await market({ alice: 100, poor: 1 });
    const group = [
      req("ok", { agentId: "alice", bundle: { cpu: 1000, memory: 2048 }, price: 3 }),
      req("below", { agentId: "alice", bundle: { cpu: 1000, memory: 2048 }, price: 2 }), // worth 2.024 at the market's prices
      req("supply", { agentId: "alice", bundle: { cpu: 3000, memory: 1 }, price: 10 }),
      req("poor", { agentId: "poor", bundle: { cpu: 100, memory: 100 }, price: 3 }),
      req("zero", { agentId: "alice", bundle: { cpu: 0, memory: 10 }, price: 1 }),
      req("misspelt", { agentId: "alice", bundle: { cpu: 10, mem: 10 } as never, price: 1 }),
      req("empty", { agentId: "alice", bundle: {}, price: 1 }),
      req("nobody", { agentId: "nobody", bundle: { cpu: 10 }, price: 1 }),
      req("single", { agentId: "alice", resource: "cpu", quantity: 100, price: 0.002 }),
      req("tokens", { agentId: "alice", bundle: { tokens: 1000, attention: 1 }, price: 1.5 }),
    ];
    const results = await placeBids(db.sql, group);
    assert.deepEqual(results.map(outcome), ["placed", "BELOW_MARKET_PRICE", "EXCEEDS_SUPPLY", "INSUFFICIENT_FUNDS", "INVALID_BID", "INVALID_BID", "INVALID_BID", "UNKNOWN_AGENT", "placed", "placed"]);
    const rows = await db.sql<{ source_msg_id: string; resource: string; quantity: bigint; price_per_unit: bigint; amount: bigint; status: string; components: unknown }[]>`
      SELECT source_msg_id, resource, quantity, price_per_unit, amount, status, components FROM bids ORDER BY id`;
    assert.deepEqual(
      rows.map((r) => [r.source_msg_id, r.resource, Number(r.quantity), Number(r.price_per_unit), Number(r.amount), r.status, r.components]),
      [
        ["ok", "bundle", 1, 3_000_000, 3_000_000, "open", { cpu: 1000, memory: 2048 }],
        ["below", "bundle", 1, 2_000_000, 2_000_000, "rejected", { cpu: 1000, memory: 2048 }],
        ["supply", "bundle", 1, 10_000_000, 10_000_000, "rejected", { cpu: 3000, memory: 1 }],
        ["poor", "bundle", 1, 3_000_000, 3_000_000, "rejected", { cpu: 100, memory: 100 }],
        ["single", "cpu", 100, 2000, 200_000, "open", null],
        ["tokens", "bundle", 1, 1_500_000, 1_500_000, "open", { tokens: 1000, attention: 1 }],
      ],
    );
    assert.equal((await agentBalance(db.sql, "alice")).reserved, 4_700_000n, "3 + 0.2 + 1.5 credits reserved");
    const [placed] = await db.sql<{ payload: Record<string, unknown> }[]>`SELECT envelope->'payload' AS payload FROM outbox WHERE source_msg_id = 'ok' AND envelope->>'type' = 'bid_placed'`;
    assert.deepEqual({ ...placed!.payload, bid_id: "…" }, { bid_id: "…", agent_id: "alice", window_id: 7, resource: "bundle", quantity: 1, price: 3, amount: 3, bundle: { cpu: 1000, memory: 2048 } });
    const [misspelt] = await db.sql<{ message: string }[]>`SELECT envelope->'payload'->>'message' AS message FROM outbox WHERE source_msg_id = 'misspelt'`;
    assert.match(misspelt!.message, /mem is not a resource/);

    const again = await placeBids(db.sql, group);
    assert.deepEqual(again.map((r) => (r.status === "placed" ? r.bidId : r.reason)), results.map((r) => (r.status === "placed" ? r.bidId : r.reason)));
    assert.ok(again.every((r) => r.duplicate));
  });

  it("clear with single bids in one pass: the worked example; a winner's row and bundle_allocated, once", async () => {
    const db = await market({ alice: 100, bob: 100, carol: 100, dave: 100, erin: 100 });
    const W = 100;
    const windowMs = 60_000;
    const bids: [string, BidInput][] = [
      ["alice-1", { agentId: "alice", bundle: { cpu: 1000, memory: 2048 }, price: 3, streamSeq: 1 }],
      ["bob-1", { agentId: "bob", resource: "cpu", quantity: 1500, price: 0.002, streamSeq: 2 }],
      ["carol-1", { agentId: "carol", bundle: { cpu: 500, memory: 1024 }, price: 1.2, streamSeq: 3 }],
      ["dave-1", { agentId: "dave", resource: "memory", quantity: 3000, price: 0.0006, streamSeq: 4 }],
      ["erin-1", { agentId: "erin", bundle: { cpu: 400, memory: 512 }, price: 0.7, streamSeq: 5 }],
    ];
    const placed = await placeBids(db.sql, bids.map(([id, input]) => req(id, input, W)));
    assert.deepEqual(placed.map(outcome), ["placed", "placed", "placed", "placed", "placed"]);
    const idOf = Object.fromEntries(bids.map(([id], i) => [id, (placed[i] as { bidId: string }).bidId]));

    const tick = cause(`tick-${W}`);
    const r = await clearMarketWindow(db.sql, tick, W, undefined, { windowMs });
    assert.deepEqual([r.winners, r.losers, r.burned], [3, 2, 6]);

    const status = await db.sql<{ source_msg_id: string; status: string; reason: string | null; bundle_id: bigint | null }[]>`SELECT source_msg_id, status, reason, bundle_id FROM bids ORDER BY id`;
    assert.deepEqual(status.map((b) => [b.source_msg_id, b.status, b.reason, b.bundle_id !== null]), [
      ["alice-1", "lost", "OUTBID", false],
      ["bob-1", "won", null, false],
      ["carol-1", "won", null, true],
      ["dave-1", "won", null, false],
      ["erin-1", "lost", "OUTBID", false],
    ]);
    const bundles = await db.sql`SELECT id, agent_id, window_id, cpu, memory_mb, tokens, attention, duration_ms, source_msg_id FROM resource_bundles`;
    assert.equal(bundles.length, 1);
    const row = bundles[0]!;
    assert.deepEqual(
      [row.agent_id, Number(row.window_id), Number(row.cpu), Number(row.memory_mb), Number(row.tokens), Number(row.attention), Number(row.duration_ms), row.source_msg_id],
      ["carol", W + 1, 500, 1024, 0, 0, windowMs, `tick-${W}:bundle:${idOf["carol-1"]}`],
    );
    assert.equal(String(status[2]!.bundle_id), String(row.id));

    const events = await db.sql<{ type: string; subject: string; correlation: string; payload: Record<string, unknown> }[]>`
      SELECT envelope->>'type' AS type, subject, envelope->>'correlation_id' AS correlation, envelope->'payload' AS payload FROM outbox WHERE source_msg_id = ${tick.sourceMsgId} ORDER BY seq`;
    const allocated = events.filter((e) => e.type === "bundle_allocated");
    assert.equal(allocated.length, 1);
    assert.equal(allocated[0]!.subject, "market.bundle_allocated");
    assert.equal(allocated[0]!.correlation, "conv-carol-1", "the bid's conversation");
    assert.deepEqual(allocated[0]!.payload, {
      bundle_id: String(row.id),
      bid_id: idOf["carol-1"],
      agent_id: "carol",
      window_id: W,
      run_window_id: W + 1,
      window_start: (W + 1) * windowMs,
      window_end: (W + 2) * windowMs,
      duration_ms: windowMs,
      cpu: 500,
      memory_mb: 1024,
      tokens: 0,
      attention: 0,
      amount: 1.2,
      runnable: true,
    });
    const lost = events.filter((e) => e.type === "bid_lost").map((e) => e.payload);
    assert.deepEqual(lost.find((p) => p.agent_id === "alice"), { bid_id: idOf["alice-1"], agent_id: "alice", window_id: W, resource: "bundle", reason: "OUTBID", bundle: { cpu: 1000, memory: 2048 }, short: ["cpu"] });
    const burns = events.filter((e) => e.type === "credits_burned").map((e) => [e.payload.agent_id, e.payload.amount]);
    assert.deepEqual(burns.sort(), [["bob", 3], ["carol", 1.2], ["dave", 1.8]]);
    assert.equal(events.filter((e) => e.type === "resources_allocated").length, 2, "bob's and dave's single bids");
    const cleared = events.find((e) => e.type === "window_cleared")!.payload;
    assert.deepEqual(cleared, { window_id: W, bids: 5, winners: 3, burned: 6 });

    // prices and utilization count the winning bundle's components like single bids
    const prices = await db.sql<{ resource: string; demand: bigint; allocated: bigint; utilization: number }[]>`SELECT resource, demand, allocated, utilization FROM market_prices WHERE window_id = ${W} AND resource IN ('cpu', 'memory') ORDER BY resource`;
    assert.deepEqual(prices.map((p) => [p.resource, Number(p.demand), Number(p.allocated), p.utilization]), [
      ["cpu", 1500 + 1000 + 500 + 400, 2000, 1],
      ["memory", 3000 + 2048 + 1024 + 512, 4024, 4024 / 4096],
    ]);

    for (const [agent, balance] of [["alice", 100], ["bob", 97], ["carol", 98.8], ["dave", 98.2], ["erin", 100]] as const) {
      const b = await agentBalance(db.sql, agent);
      assert.deepEqual([agent, Number(b.balance) / 1e6, b.reserved], [agent, balance, 0n], "winners pay their bid, losers nothing, nothing stays reserved");
    }

    // the same tick again, and another tick for the same window: nothing more written
    const outboxBefore = (await db.sql`SELECT 1 FROM outbox`).length;
    assert.equal((await clearMarketWindow(db.sql, tick, W, undefined, { windowMs })).duplicate, true);
    assert.equal((await clearMarketWindow(db.sql, cause(`tick-${W}-again`), W, undefined, { windowMs })).duplicate, true);
    assert.equal((await db.sql`SELECT 1 FROM resource_bundles`).length, 1);
    assert.equal((await db.sql`SELECT 1 FROM outbox`).length, outboxBefore);
    const check = await checkLedger(db.sql);
    assert.equal(check.ok, true, json(check));
  });

  it("a bundle without cpu and memory is not runnable; it still wins or loses as a whole", async () => {
    const db = await market({ ann: 10, ben: 10 });
    const placed = await placeBids(db.sql, [
      req("ann-1", { agentId: "ann", bundle: { tokens: 50_000, attention: 1 }, price: 2, streamSeq: 1 }),
      // ann offers 2 for 1.5 credits of value at the market's prices, ben 1.5 for 1.1: ben ranks first (his single bid, 2 per unit of value, before both)
      req("ben-1", { agentId: "ben", bundle: { tokens: 10_000, attention: 1 }, price: 1.5, streamSeq: 2 }),
      req("ben-2", { agentId: "ben", resource: "tokens", quantity: 40_000, price: 0.00002, streamSeq: 3 }),
    ].map((x) => ({ ...x, windowId: 3 })));
    assert.deepEqual(placed.map(outcome), ["placed", "placed", "placed"]);
    await clearMarketWindow(db.sql, cause("tick-3"), 3);
    const events = await db.sql<{ type: string; payload: Record<string, unknown> }[]>`SELECT envelope->>'type' AS type, envelope->'payload' AS payload FROM outbox WHERE source_msg_id = 'tick-3' ORDER BY seq`;
    const won = events.filter((e) => e.type === "bundle_allocated").map((e) => e.payload);
    // ben's bundle takes the one unit of attention; ann's cannot have it, so she gets no tokens either
    assert.deepEqual(won.map((p) => [p.agent_id, p.tokens, p.attention, p.runnable, p.cpu, p.memory_mb, p.window_start, p.window_end]), [["ben", 10_000, 1, false, 0, 0, 4000, 5000]]);
    const lost = events.filter((e) => e.type === "bid_lost").map((e) => [e.payload.agent_id, e.payload.reason, e.payload.short]);
    assert.deepEqual(lost, [["ann", "OUTBID", ["attention"]]]);
    assert.equal(events.filter((e) => e.type === "resources_allocated").length, 1, "ben's single tokens bid fits beside his bundle");
    const [tokens] = await db.sql<{ allocated: bigint }[]>`SELECT allocated FROM market_prices WHERE window_id = 3 AND resource = 'tokens'`;
    assert.equal(Number(tokens!.allocated), 50_000, "ann's tokens were not held for her");
  });

  it("an open bundle of an agent terminated behind the functions' back is lost, never burned", async () => {
    const db = await market({ gone: 10 });
    const [placed] = await placeBids(db.sql, [req("gone-1", { agentId: "gone", bundle: { cpu: 100, memory: 100 }, price: 1 }, 5)]);
    assert.equal(placed!.status, "placed");
    await db.sql`UPDATE agents SET status = 'terminated' WHERE id = 'gone'`;
    const r = await clearMarketWindow(db.sql, cause("tick-5"), 5);
    assert.deepEqual([r.winners, r.losers, r.burned], [0, 1, 0]);
    const [lost] = await db.sql<{ payload: Record<string, unknown> }[]>`SELECT envelope->'payload' AS payload FROM outbox WHERE source_msg_id = 'tick-5' AND envelope->>'type' = 'bid_lost'`;
    assert.deepEqual([lost!.payload.resource, lost!.payload.reason, lost!.payload.bundle], ["bundle", "AGENT_TERMINATED", { cpu: 100, memory: 100 }]);
    assert.equal((await db.sql`SELECT 1 FROM resource_bundles`).length, 0);
  });
});
