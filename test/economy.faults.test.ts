import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { inTransaction } from "../economy/ledger.ts";
import { recordEvents } from "../economy/events.ts";
import { windowOf } from "../economy/runtime.ts";
import { loadConfigFile } from "../host/configFile.ts";
import { listDeadLetters, type DeadLetter } from "../host/deadLetter.ts";
import type { Envelope } from "../host/envelope.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { readSubject, ROOT, startHost, waitFor } from "./helpers/host.ts";

// Faults the economy survives, with the project's own functions on a real nats-server and
// PostgreSQL: events whose writer never published them leave through the relay; a refused bid is
// recorded, stated and dead-lettered with its reason while the bids beside it are placed; only the
// scheduler's tick of a closed window clears it.

const WINDOW_MS = 500;
const enc = (v: unknown) => JSON.stringify(v);

describe("economy faults", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  let lines: string[] = [];

  before(async () => {
    nats = await startTestNats(hooks);
    db = await startTestDatabase(hooks);
    process.env.DATABASE_URL = db.url;
    process.env.ECONOMY_WINDOW_MS = String(WINDOW_MS);
    const config = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
    ({ lines } = await startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config }));
  });

  const dead = (fn: string) => listDeadLetters(nats.jsm, "DEAD_LETTERS", { prefix: "dlq", fn });
  const explain = async () => `\n${lines.slice(-20).join("\n")}`;

  it("an event committed and never published by its writer reaches AUDIT through the relay", async () => {
    const cause = { sourceMsgId: "lost-flush-1", correlationId: "faults", causationId: "lost-flush-1", from: "test" };
    const started = Date.now();
    const [event] = await inTransaction(db.sql, (tx) => recordEvents(tx, cause, [{ type: "agent_spawned", to: "ghost", payload: { agent_id: "ghost", parent_id: null, credits: 0 } }]));
    const stored = await waitFor("the event on AUDIT", async () => (await readSubject(nats.jsm, "AUDIT", "system.agent_spawned")).find((m) => m.json<Envelope>().id === event!.id), 10_000).catch(async (err) => {
      throw new Error(`${(err as Error).message}${await explain()}`);
    });
    const tookMs = Date.now() - started;
    assert.equal(stored.header.get("Nats-Msg-Id"), event!.id);
    assert.equal(stored.header.get("Syntropism-Correlation-Id"), "faults", "headers of the event's conversation, not the relay's");
    assert.deepEqual(stored.json<Envelope>(), JSON.parse(JSON.stringify(event)));
    const [row] = await db.sql<{ published_at: Date | null }[]>`SELECT published_at FROM outbox WHERE event_id = ${event!.id}`;
    assert.ok(row!.published_at, "marked published");
    // at least the minimum age (1 s), at most that plus a relay period and some slack
    assert.ok(tookMs >= 900 && tookMs < 5000, `relayed after ${tookMs} ms`);
    console.log(JSON.stringify({ relayedAfterMs: tookMs }));
  });

  it("a refused bid is recorded, stated as bid_rejected and dead-lettered with its reason; the bids beside it are placed", async () => {
    for (const [agent, credits] of [["rich1", 100], ["rich2", 100], ["poor", 1]] as const) await nats.js.publish("admin.genesis", enc({ agent_id: agent, credits }));
    await waitFor("agents funded", async () => (await db.sql`SELECT 1 FROM accounts WHERE id = ANY(${["agent:rich1", "agent:rich2", "agent:poor"]}) AND balance > 0`).length === 3);
    // published together, so that they are handled together (one group, one transaction)
    await Promise.all([
      nats.js.publish("market.bid.rich1", enc({ resource: "cpu", quantity: 100, price: 0.002 }), { msgID: "bid-rich1" }),
      nats.js.publish("market.bid.poor", enc({ resource: "cpu", quantity: 1000, price: 0.01 }), { msgID: "bid-poor" }),
      nats.js.publish("market.bid.rich2", enc({ resource: "memory", quantity: 100, price: 0.001 }), { msgID: "bid-rich2" }),
      // quantity × price beyond any bid (and beyond BIGINT): refused on its own, fails nothing else
      nats.js.publish("market.bid.rich1", enc({ resource: "tokens", quantity: 2 ** 50, price: 100_000 }), { msgID: "bid-huge" }),
      nats.js.publish("market.bid.nobody", enc({ resource: "cpu", quantity: 10, price: 0.01 }), { msgID: "bid-nobody" }),
    ]);
    const letters = await waitFor("three dead letters", async () => {
      const d = await dead("market/placeBid");
      return d.length >= 3 ? d : undefined;
    }).catch(async (err) => {
      throw new Error(`${(err as Error).message}${await explain()}`);
    });
    const byMsgId = (d: DeadLetter[]) => Object.fromEntries(d.map((x) => [x.msgId, [x.reason, x.error?.code, x.attempts]]));
    assert.deepEqual(byMsgId(letters), {
      "bid-poor": ["INSUFFICIENT_FUNDS", "INSUFFICIENT_FUNDS", 1],
      "bid-huge": ["INVALID_BID", "INVALID_BID", 1],
      "bid-nobody": ["UNKNOWN_AGENT", "UNKNOWN_AGENT", 1],
    });
    assert.match(letters.find((x) => x.msgId === "bid-poor")!.error!.message, /bid of 10 credits; 1 available/);

    const bids = await db.sql<{ source_msg_id: string; status: string; reason: string | null }[]>`SELECT source_msg_id, status, reason FROM bids ORDER BY source_msg_id`;
    const bidRows = Object.fromEntries(bids.map((b) => [b.source_msg_id, [b.status, b.reason]]));
    assert.deepEqual(bidRows["bid-poor"], ["rejected", "INSUFFICIENT_FUNDS"], "the refusal is recorded");
    assert.ok(["open", "won", "lost"].includes(bidRows["bid-rich1"]![0]!), JSON.stringify(bidRows));
    assert.ok(["open", "won", "lost"].includes(bidRows["bid-rich2"]![0]!), JSON.stringify(bidRows));
    assert.equal(bidRows["bid-huge"], undefined, "an amount no row can hold has only its event");

    const events = await waitFor("the bids' events", async () => {
      const e = [...(await readSubject(nats.jsm, "AUDIT", "market.bid_placed")), ...(await readSubject(nats.jsm, "AUDIT", "market.bid_rejected"))].map((m) => m.json<Envelope>());
      return e.length >= 5 ? e : undefined;
    });
    const said = Object.fromEntries(events.map((e) => [String(e.causation_id), [e.type, (e.payload as { reason?: string }).reason ?? null]]));
    assert.deepEqual(said, {
      "bid-rich1": ["bid_placed", null],
      "bid-rich2": ["bid_placed", null],
      "bid-poor": ["bid_rejected", "INSUFFICIENT_FUNDS"],
      "bid-huge": ["bid_rejected", "INVALID_BID"],
      "bid-nobody": ["bid_rejected", "UNKNOWN_AGENT"],
    });
  });

  it("only the scheduler's tick of a closed window clears it: -1, 1e13 and open windows are dead-lettered, a re-tick is a no-op", async () => {
    const last = await waitFor("a window cleared by the scheduler", async () => {
      const [r] = await db.sql<{ window_id: bigint; source_msg_id: string }[]>`SELECT window_id, source_msg_id FROM market_windows ORDER BY window_id DESC LIMIT 1`;
      return r;
    });
    // the current window, early enough in it that it is not about to close (clock skew allowance)
    await waitFor("the start of a window", () => Date.now() % WINDOW_MS < WINDOW_MS / 4, 5000, 5);
    const open = windowOf(Date.now(), WINDOW_MS);
    const ticks: [string, number][] = [
      ["tick-minus-1", -1],
      ["tick-1e13", 1e13],
      ["tick-open", open],
      ["tick-next", open + 2],
      ["tick-fraction", 1.5],
      ["tick-again", Number(last.window_id)],
    ];
    const seqs = new Map<string, number>();
    for (const [id, w] of ticks) seqs.set(id, (await nats.js.publish("market.tick", enc({ window_id: w }), { msgID: id })).seq);
    const letters = await waitFor("five dead letters", async () => {
      const d = await dead("market/clearAuction");
      return d.length >= 5 ? d : undefined;
    }).catch(async (err) => {
      throw new Error(`${(err as Error).message}${await explain()}`);
    });
    assert.deepEqual(Object.fromEntries(letters.map((x) => [x.msgId, x.error?.code])), {
      "tick-minus-1": "INVALID_WINDOW",
      "tick-1e13": "INVALID_WINDOW",
      "tick-open": "TICK_NOT_DUE",
      "tick-next": "TICK_NOT_DUE",
      "tick-fraction": "INVALID_WINDOW",
    });
    // the re-tick was acknowledged (gone from the work queue) and changed nothing
    await waitFor("the re-tick acknowledged", async () => (await nats.jsm.streams.getMessage("MARKET", { seq: seqs.get("tick-again")! }).catch(() => null)) === null);
    const [again] = await db.sql<{ source_msg_id: string }[]>`SELECT source_msg_id FROM market_windows WHERE window_id = ${last.window_id}`;
    assert.equal(again!.source_msg_id, last.source_msg_id);
    assert.equal((await db.sql`SELECT 1 FROM market_windows WHERE window_id >= ${open}`).length, 0, "the open window was not cleared early");
    // and the scheduler goes on clearing
    await waitFor("a later window cleared", async () => (await db.sql`SELECT 1 FROM market_windows WHERE window_id >= ${open}`).length > 0, 5000);
  });
});
