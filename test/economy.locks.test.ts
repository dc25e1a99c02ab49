import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { placeBids, type BidRequest } from "../economy/bids.ts";
import { clearMarketWindow } from "../economy/clearing.ts";
import { connect, type Sql } from "../economy/db.ts";
import type { Cause } from "../economy/events.ts";
import { checkLedger, inTransaction, mint, openAccount, transfer } from "../economy/ledger.ts";
import { DEFAULT_MARKET, seedMarket } from "../economy/runtime.ts";
import { suiteScope } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";

// Lock order against a real PostgreSQL: clearings run while many groups of bids and transfers
// lock the same accounts, and PostgreSQL's own deadlock counter for the database stays at 0;
// SQLSTATE 40001 / 40P01 are retried inside the transaction helper, not left to redelivery.

const AGENTS = 8;
const agent = (i: number) => `lock${i}`;
const cause = (id: string): Cause => ({ sourceMsgId: id, correlationId: id, causationId: id, from: "test" });

async function deadlocks(sql: Sql): Promise<number> {
  // statistics reach the shared counters when a backend flushes them: ask every backend's to be flushed
  await sql`SELECT pg_stat_force_next_flush()`;
  await sql`SELECT pg_stat_clear_snapshot()`;
  const [row] = await sql<{ n: bigint }[]>`SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()`;
  return Number(row!.n);
}

describe("lock order", () => {
  const hooks = suiteScope(after);
  let db: TestDatabase;
  let sql: Sql;

  before(async () => {
    db = await startTestDatabase(hooks);
    // a short deadlock_timeout makes a deadlock cost milliseconds: the test would count many of them
    await db.sql.unsafe(`ALTER DATABASE ${db.name} SET deadlock_timeout = '20ms'`);
    sql = connect(db.url, { max: 24, applicationName: "syntropism-lock-test" });
    hooks.after(() => sql.end({ timeout: 5 }));
    await seedMarket(sql, DEFAULT_MARKET);
    for (let i = 0; i < AGENTS; i++) {
      await openAccount(sql, agent(i));
      await mint(sql, { sourceMsgId: `lock-genesis-${i}`, to: agent(i), amount: 1_000_000_000n, kind: "genesis" });
    }
  });

  it("clearing concurrently with placing bids and transfers on the same accounts: no deadlock", async () => {
    const before = await deadlocks(sql);
    let window = 1000;
    let done = false;
    const errors: unknown[] = [];
    const counts = { groups: 0, bids: 0, transfers: 0, clearings: 0, winners: 0 };
    const rnd = (n: number) => Math.floor(Math.random() * n);

    // bids for the window about to clear: the highest agents bid the most on one resource and the
    // lowest on another, so winners come in an order that is not the accounts' order
    let bidSeq = 0;
    const bidder = async (w: number) => {
      for (let round = 0; !done; round++) {
        const group: BidRequest[] = [];
        const size = 1 + rnd(12);
        for (let k = 0; k < size; k++) {
          const a = rnd(AGENTS);
          const resource = (["cpu", "memory", "tokens", "attention"] as const)[(a + k) % 4]!;
          const id = `lock-bid-${w}-${++bidSeq}`;
          const price = { cpu: 0.001, memory: 0.0005, tokens: 0.00001, attention: 1 }[resource] * (2 + ((a * 7 + round) % 5));
          const quantity = resource === "attention" ? 1 : 10 + rnd(50);
          group.push({ cause: cause(id), input: { agentId: agent(a), resource, quantity, price: Math.round(price * 1e6) / 1e6, streamSeq: bidSeq }, windowId: window });
        }
        try {
          await placeBids(sql, group);
          counts.groups++;
          counts.bids += group.length;
        } catch (err) {
          errors.push(err);
        }
      }
    };
    let transferSeq = 0;
    const payer = async () => {
      while (!done) {
        const from = rnd(AGENTS);
        const to = (from + 1 + rnd(AGENTS - 1)) % AGENTS;
        try {
          await transfer(sql, { sourceMsgId: `lock-transfer-${++transferSeq}`, from: agent(from), to: agent(to), amount: 1000n + BigInt(rnd(1000)) });
          counts.transfers++;
        } catch (err) {
          errors.push(err);
        }
      }
    };
    // two clearers, as two workers would: one window at a time each, windows racing each other
    const clearer = async (k: number) => {
      while (!done) {
        const w = window++;
        try {
          const r = await clearMarketWindow(sql, cause(`lock-tick-${w}-${k}`), w);
          counts.clearings++;
          counts.winners += r.winners;
        } catch (err) {
          errors.push(err);
        }
      }
    };

    const workers = [...Array.from({ length: 6 }, (_, i) => bidder(i)), ...Array.from({ length: 6 }, payer), clearer(1), clearer(2)];
    // at least 4 s, and on until each kind has run often enough to meet (a busy machine is slower)
    const started = Date.now();
    const enough = () => counts.clearings >= 3 && counts.winners >= 10 && counts.bids >= 100 && counts.transfers >= 100;
    while (Date.now() - started < 4000 || (!enough() && Date.now() - started < 30_000)) await new Promise((r) => setTimeout(r, 100));
    done = true;
    await Promise.all(workers);
    // what is left open clears with one last window
    await clearMarketWindow(sql, cause("lock-tick-last"), window + 1);

    const found = (await deadlocks(sql)) - before;
    const codes = errors.map((e) => (e as { code?: string }).code ?? (e as Error).message);
    const serious = codes.filter((c) => c !== "INSUFFICIENT_FUNDS");
    console.log(JSON.stringify({ ...counts, deadlocks: found, errors: codes.length }));
    assert.deepEqual(serious, [], "no error other than a refused transfer");
    assert.equal(found, 0, "PostgreSQL detected deadlocks");
    assert.ok(counts.clearings >= 3 && counts.winners >= 10 && counts.bids >= 100 && counts.transfers >= 100, JSON.stringify(counts));
    const check = await checkLedger(sql);
    assert.equal(check.ok, true, JSON.stringify(check, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    const [open] = await sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM bids WHERE status = 'open'`;
    assert.equal(open!.n, 0n);
  });

  it("a serialization failure or a deadlock raised once is retried inside the transaction helper", async () => {
    // a trigger that fails the first run of a chosen movement: sequences are not transactional,
    // so the rerun sees the sequence already advanced
    await sql.unsafe(`
      CREATE SEQUENCE fail_once_40001; CREATE SEQUENCE fail_once_40p01;
      CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.source_msg_id LIKE 'retry-40001%' AND nextval('fail_once_40001') = 1 THEN
          RAISE EXCEPTION 'forced serialization failure' USING ERRCODE = '40001';
        END IF;
        IF NEW.source_msg_id = 'retry-40p01' AND nextval('fail_once_40p01') = 1 THEN
          RAISE EXCEPTION 'forced deadlock' USING ERRCODE = '40P01';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER fail_once BEFORE INSERT ON ledger_transactions FOR EACH ROW EXECUTE FUNCTION fail_once();`);
    hooks.after(async () => void (await sql.unsafe(`DROP TRIGGER IF EXISTS fail_once ON ledger_transactions`).catch(() => {})));

    for (const [id, seq] of [["retry-40001", "fail_once_40001"], ["retry-40p01", "fail_once_40p01"]] as const) {
      const r = await transfer(sql, { sourceMsgId: id, from: agent(0), to: agent(1), amount: 5n });
      assert.equal(r.duplicate, false);
      const [runs] = await sql<{ n: bigint }[]>`SELECT last_value AS n FROM ${sql(seq)}`;
      assert.equal(runs!.n, 2n, `${id}: one failed run, one that committed`);
      const [txs] = await sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM ledger_transactions WHERE source_msg_id = ${id}`;
      assert.equal(txs!.n, 1n);
    }

    // in a caller's transaction nothing is retried here: the error reaches the caller, whose own
    // retry (the host's, for a function) covers it
    await sql`ALTER SEQUENCE fail_once_40001 RESTART`;
    await assert.rejects(
      sql.begin((tx) => transfer(tx, { sourceMsgId: "retry-40001-caller", from: agent(0), to: agent(1), amount: 5n })),
      (err: { code?: string }) => err.code === "40001",
    );
  });

  it("a real serialization conflict (write skew under SERIALIZABLE) is retried, and both transactions commit", async () => {
    await sql`CREATE TABLE skew (n int NOT NULL)`;
    let reads = 0;
    let release!: () => void;
    const bothRead = new Promise<void>((r) => (release = r));
    const retries: string[] = [];
    const run = () =>
      inTransaction(
        sql,
        async (tx) => {
          await tx`SET TRANSACTION ISOLATION LEVEL SERIALIZABLE`;
          const [row] = await tx<{ total: number }[]>`SELECT coalesce(sum(n), 0)::int AS total FROM skew`;
          // the first runs read before either writes: one of them cannot commit
          if (++reads <= 2) {
            if (reads === 2) release();
            await bothRead;
          }
          await tx`INSERT INTO skew (n) VALUES (${row!.total + 1})`;
        },
        { onRetry: (err) => retries.push((err as { code: string }).code) },
      );
    await Promise.all([run(), run()]);
    assert.deepEqual(retries, ["40001"]);
    const rows = await sql<{ n: number }[]>`SELECT n FROM skew ORDER BY n`;
    assert.deepEqual(rows.map((r) => r.n), [1, 2], "the retried one saw the other's row");
  });
});
