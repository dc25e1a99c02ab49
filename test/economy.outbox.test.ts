import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { RetentionPolicy } from "@nats-io/jetstream";
import { AUDIT_SUBJECTS } from "../economy/catalogue.ts";
import { clearMarketWindow, tickDueIn } from "../economy/clearing.ts";
import type { Sql } from "../economy/db.ts";
import { jetStreamPublisher, publishRecorded, recordCaused, recordEvents, relayOutbox, type Cause, type EventPublisher, type Recorded } from "../economy/events.ts";
import { inTransaction } from "../economy/ledger.ts";
import { DEFAULT_MARKET, seedMarket } from "../economy/runtime.ts";
import type { Envelope } from "../host/envelope.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";

// The outbox relay against a real PostgreSQL and nats-server, without the host: events recorded
// and never flushed are published by the relay, in outbox order, once; a crash between publish and
// mark costs a duplicate the stream drops; a failed publish leaves the batch for the next run; one
// relay at a time. And the window clock that decides which ticks may clear.

const cause = (id: string): Cause => ({ sourceMsgId: id, correlationId: `corr-${id}`, causationId: id, from: "test" });
const spawned = (agent: string) => ({ type: "agent_spawned" as const, to: agent, payload: { agent_id: agent, parent_id: null, credits: 1 } });

async function audit(nats: TestNats): Promise<{ seq: number; msgId: string; env: Envelope }[]> {
  const info = await nats.jsm.streams.info("AUDIT");
  const out: { seq: number; msgId: string; env: Envelope }[] = [];
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await nats.jsm.streams.getMessage("AUDIT", { seq }).catch(() => null);
    if (m) out.push({ seq, msgId: m.header.get("Nats-Msg-Id"), env: m.json<Envelope>() });
  }
  return out;
}

const unpublished = async (sql: Sql) => (await sql<{ event_id: string }[]>`SELECT event_id FROM outbox WHERE published_at IS NULL ORDER BY seq`).map((r) => r.event_id);

describe("outbox relay", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  let publish: EventPublisher;

  before(async () => {
    nats = await startTestNats(hooks);
    db = await startTestDatabase(hooks);
    await nats.jsm.streams.add({ name: "AUDIT", subjects: AUDIT_SUBJECTS, retention: RetentionPolicy.Limits });
    publish = jetStreamPublisher(nats.js);
  });

  it("publishes committed events nobody flushed, in outbox order, msg id = event id, once", async () => {
    // two commands commit their events and never publish them (their worker died after commit)
    const a = await inTransaction(db.sql, (tx) => recordEvents(tx, cause("cmd-a"), [spawned("a1"), spawned("a2"), spawned("a3")]));
    const b = await inTransaction(db.sql, (tx) => recordEvents(tx, cause("cmd-b"), [spawned("b1"), spawned("b2")]));
    const ids = [...a, ...b].map((e) => e.id);
    assert.deepEqual(await unpublished(db.sql), ids);

    // younger than the minimum age: the fast path's, not the relay's
    assert.deepEqual(await relayOutbox(db.sql, publish, { minAgeMs: 60_000 }), { published: 0, duplicates: 0, busy: false });
    assert.equal((await audit(nats)).length, 0);

    const r = await relayOutbox(db.sql, publish, { minAgeMs: 0, batch: 2 });
    assert.deepEqual(r, { published: 5, duplicates: 0, busy: false });
    const stored = await audit(nats);
    assert.deepEqual(stored.map((s) => s.env.id), ids, "in outbox order");
    assert.deepEqual(stored.map((s) => s.msgId), ids, "msg id = event id");
    assert.equal(stored[0]!.env.correlation_id, "corr-cmd-a");
    assert.deepEqual(await unpublished(db.sql), []);
    assert.deepEqual(await relayOutbox(db.sql, publish, { minAgeMs: 0 }), { published: 0, duplicates: 0, busy: false });
  });

  it("a crash between publish and mark: the relay publishes again and the stream drops the repeat", async () => {
    const recorded: Recorded[] = [];
    await inTransaction(db.sql, (tx) => recordCaused(tx, [{ cause: cause("cmd-c"), event: spawned("c1") }], recorded));
    const before = (await audit(nats)).length;
    await Promise.all(recorded.map((x) => nats.js.publish(x.subject, JSON.stringify(x.envelope), { msgID: x.id }))); // published, never marked
    assert.deepEqual(await unpublished(db.sql), [recorded[0]!.id]);
    const r = await relayOutbox(db.sql, publish, { minAgeMs: 0 });
    assert.deepEqual(r, { published: 1, duplicates: 1, busy: false });
    assert.equal((await audit(nats)).length, before + 1);
    // and the fast path marking what the relay already did changes nothing
    await publishRecorded(jetStreamPublisher(nats.js), db.sql, recorded);
    assert.equal((await audit(nats)).length, before + 1);
  });

  it("a publish that fails leaves its batch unmarked for the next run", async () => {
    const events = await inTransaction(db.sql, (tx) => recordEvents(tx, cause("cmd-d"), [spawned("d1"), spawned("d2")]));
    let calls = 0;
    const failing: EventPublisher = async (subject, envelope, msgId) => {
      if (++calls === 2) throw new Error("nats is gone");
      return publish(subject, envelope, msgId);
    };
    await assert.rejects(relayOutbox(db.sql, failing, { minAgeMs: 0 }), /nats is gone/);
    assert.deepEqual(await unpublished(db.sql), events.map((e) => e.id));
    assert.deepEqual(await relayOutbox(db.sql, publish, { minAgeMs: 0 }), { published: 2, duplicates: 1, busy: false });
    assert.deepEqual(await unpublished(db.sql), []);
  });

  it("one relay at a time: a second one finds the outbox busy and waits for nothing", async () => {
    await inTransaction(db.sql, (tx) => recordEvents(tx, cause("cmd-e"), [spawned("e1")]));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const slow: EventPublisher = async (subject, envelope, msgId) => {
      entered();
      await gate;
      return publish(subject, envelope, msgId);
    };
    const first = relayOutbox(db.sql, slow, { minAgeMs: 0 });
    await inside;
    assert.deepEqual(await relayOutbox(db.sql, publish, { minAgeMs: 0 }), { published: 0, duplicates: 0, busy: true });
    release();
    assert.deepEqual(await first, { published: 1, duplicates: 0, busy: false });
  });
});

describe("the window clock", () => {
  const hooks = suiteScope(after);
  let db: TestDatabase;
  const windowMs = 1000;
  const now = 1_800_000_000_000; // a fixed moment: window 1_800_000_000 is open
  const clock = { windowMs, now: () => now };
  const refused = (code: string) => (err: { code?: string; name?: string }) => err.name === "TickRefusedError" && err.code === code;

  before(async () => {
    db = await startTestDatabase(hooks);
    await seedMarket(db.sql, DEFAULT_MARKET);
  });

  it("tickDueIn: closed windows are due; negative, fractional, open, far-off windows are refused", () => {
    const open = now / windowMs;
    assert.equal(tickDueIn(open - 1, clock), 0, "the window that just ended");
    assert.equal(tickDueIn(0, clock), 0, "an old window is due (its age is judged against the last cleared one)");
    for (const w of [-1, 1.5, Number.NaN, 2 ** 60]) assert.throws(() => tickDueIn(w, clock), refused("INVALID_WINDOW"), String(w));
    assert.throws(() => tickDueIn(1e13, clock), refused("INVALID_WINDOW"), "1e13: a window ~300,000 years ahead");
    assert.throws(() => tickDueIn(open + 10, clock), refused("TICK_NOT_DUE"));
    // the current window ends within the clock skew allowed (a quarter window): waited for, not refused
    assert.equal(tickDueIn(open, { windowMs, now: () => now + 800 }), 200);
    assert.throws(() => tickDueIn(open, { windowMs, now: () => now + 700 }), refused("TICK_NOT_DUE"), "300 ms still to go is not clock skew");
    assert.throws(() => tickDueIn(open, clock), refused("TICK_NOT_DUE"));
    assert.equal(tickDueIn(open, { ...clock, skewMs: 1000 }), 1000);
  });

  it("clearMarketWindow with a clock: an hour-old window is refused, a re-tick or an older window is a no-op", async () => {
    const open = now / windowMs;
    const tick = (w: number) => clearMarketWindow(db.sql, cause(`tick-${w}`), w, clock);
    await assert.rejects(tick(open - 3602), refused("INVALID_WINDOW"));
    assert.equal((await db.sql`SELECT 1 FROM market_windows`).length, 0, "nothing was claimed");
    const first = await tick(open - 120);
    assert.equal(first.duplicate, false);
    assert.equal((await tick(open - 120)).duplicate, true, "a re-tick");
    assert.equal((await clearMarketWindow(db.sql, cause("tick-again"), open - 120, clock)).duplicate, true, "another message for the same window");
    assert.equal((await tick(open - 3602)).duplicate, true, "older than the last cleared: covered by it, acknowledged although an hour old");
    assert.equal((await tick(open - 121)).duplicate, true);
    await assert.rejects(tick(open), refused("TICK_NOT_DUE"));
    await assert.rejects(tick(-1), refused("INVALID_WINDOW"));
    assert.equal((await tick(open - 1)).duplicate, false);
    const windows = await db.sql<{ window_id: bigint; source_msg_id: string }[]>`SELECT window_id, source_msg_id FROM market_windows ORDER BY window_id`;
    assert.deepEqual(windows.map((w) => [Number(w.window_id), w.source_msg_id]), [[open - 120, `tick-${open - 120}`], [open - 1, `tick-${open - 1}`]]);
  });
});
