import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { checkLedger, mint, openAccount } from "../economy/ledger.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { ROOT, runCli, startCli, waitFor } from "./helpers/host.ts";

// 5,000 bids from 50 agents into `host start --workers 2` while auctions clear every second; one
// worker is killed with SIGKILL in the middle. Every bid gets exactly one outcome, nothing is
// charged twice, no reservation exceeds a balance, and the ledger's invariants hold.

const AGENTS = 50;
const BIDS = 5000;

describe("economy under a burst with a worker killed", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  before(async () => {
    nats = await startTestNats(hooks);
    db = await startTestDatabase(hooks);
    for (let a = 0; a < AGENTS; a++) {
      await openAccount(db.sql, `burst${a}`);
      // 50 credits each: 100 bids of 1–5 credits cannot all be afforded
      await mint(db.sql, { sourceMsgId: `burst-genesis-${a}`, to: `burst${a}`, amount: 50_000_000n, kind: "genesis" });
    }
  });

  it("loses no bid, charges none twice, and keeps the ledger balanced", async () => {
    const env = { NATS_URL: nats.url, DATABASE_URL: db.url, ECONOMY_WINDOW_MS: "1000", LOG_LEVEL: "info" };
    assert.equal((await runCli(["streams", "apply"], env)).code, 0);
    const host = startCli(hooks, ["start", "--workers", "2"], env);
    await host.waitForLog("ready", (l) => l.msg === "all workers ready");
    const pids = host.logs().filter((l) => l.msg === "worker ready").map((l) => l.pid as number);

    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < BIDS; i++) {
      const body = JSON.stringify({ resource: i % 2 ? "cpu" : "memory", quantity: 10 + (i % 90), price: 0.01 + (i % 5) * 0.01 });
      pending.push(nats.js.publish(`market.bid.burst${i % AGENTS}`, body, { msgID: `burst-bid-${i}` }));
      if (pending.length >= 500) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);

    const decided = async () => Number((await db.sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM bids`)[0]!.n);
    await waitFor("a third of the bids decided", async () => ((await decided()) >= BIDS / 3 ? true : undefined), 60_000, 20);
    process.kill(pids[0]!, "SIGKILL");
    await host.waitForLog("restart", (l) => l.msg === "worker died; restarting");

    await waitFor("every bid decided", async () => ((await decided()) >= BIDS ? true : undefined), 180_000, 200);
    const events = async () => {
      const s = (await nats.jsm.streams.info("AUDIT", { subjects_filter: "market.>" })).state.subjects ?? {};
      return (s["market.bid_placed"] ?? 0) + (s["market.bid_rejected"] ?? 0);
    };
    await waitFor("every bid's event published", async () => ((await events()) >= BIDS ? true : undefined), 60_000, 200);
    // let the last windows clear
    await waitFor("no bid left open", async () => (Number((await db.sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM bids WHERE status = 'open'`)[0]!.n) === 0 ? true : undefined), 30_000, 200);

    const [counts] = await db.sql<{ total: bigint; distinct_src: bigint; won: bigint; rejected: bigint }[]>`
      SELECT count(*)::bigint AS total, count(DISTINCT source_msg_id)::bigint AS distinct_src,
             count(*) FILTER (WHERE status = 'won')::bigint AS won, count(*) FILTER (WHERE status = 'rejected')::bigint AS rejected FROM bids`;
    assert.equal(Number(counts!.total), BIDS, "a bid is missing or recorded twice");
    assert.equal(Number(counts!.distinct_src), BIDS);
    assert.equal(await events(), BIDS, "a bid's event was published twice or not at all");
    assert.ok(Number(counts!.rejected) > 0, "no bid was refused: the funds check was not exercised");
    assert.ok(Number(counts!.won) > 0, "no bid won: the auction did not run");

    // one burn per won bid, of exactly its amount
    const [burns] = await db.sql<{ n: bigint; amount: bigint; won_amount: bigint; unpaid: bigint }[]>`
      SELECT (SELECT count(*) FROM ledger_transactions WHERE kind = 'burn')::bigint AS n,
             (SELECT coalesce(sum(e.delta), 0) FROM ledger_entries e WHERE e.account_id = 'system:burn')::bigint AS amount,
             (SELECT coalesce(sum(amount), 0) FROM bids WHERE status = 'won')::bigint AS won_amount,
             (SELECT count(*) FROM bids WHERE status = 'won' AND paid_tx_id IS NULL)::bigint AS unpaid`;
    assert.equal(burns!.n, counts!.won, "a won bid was charged twice or not at all");
    assert.equal(burns!.amount, burns!.won_amount);
    assert.equal(Number(burns!.unpaid), 0);

    const check = await checkLedger(db.sql);
    assert.equal(check.ok, true, JSON.stringify(check, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    assert.equal(check.burned, burns!.amount);

    const cli = await new Promise<{ code: number | null; out: string }>((done) => {
      const child = spawn(process.execPath, ["--import", "tsx", resolve(ROOT, "economy/cli.ts"), "ledger", "check"], { cwd: ROOT, env: { ...process.env, DATABASE_URL: db.url } });
      let out = "";
      child.stdout.on("data", (c) => (out += c));
      child.stderr.on("data", (c) => (out += c));
      child.on("exit", (code) => done({ code, out }));
    });
    assert.equal(cli.code, 0, cli.out);
    assert.equal((await host.stop("SIGTERM")).code, 0);
  });
});
