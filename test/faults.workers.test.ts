import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { assertNothingLost, bidsRecorded, publishBids, seedAgents, startEconomyHost } from "./helpers/chaos.ts";

// 10,000 bids into `host start --workers 3` while a worker is killed with SIGKILL every second.
// A killed worker's held, unstarted bids are not its fault: none may be dead-lettered, none lost,
// none recorded or charged twice, and each bid's event reaches AUDIT exactly once.

const BIDS = Number(process.env.FAULT_BIDS ?? 10_000);

describe("faults: a worker SIGKILLed every second", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  before(async () => {
    nats = await startTestNats(hooks, { auth: true });
    db = await startTestDatabase(hooks);
  });

  it(`${BIDS} bids: every acknowledged bid in the ledger once, none dead-lettered, each event on AUDIT once`, async () => {
    const agents = await seedAgents(db.sql, "wk", 50);
    const { host } = await startEconomyHost(hooks, { natsUrl: nats.url, auth: nats.auth, databaseUrl: db.url, workers: 3 });

    // the killer: once a second, the newest ready worker that is still alive
    let kills = 0;
    let killing = true;
    const killer = (async () => {
      while (killing) {
        await new Promise((r) => setTimeout(r, 1000));
        if (!killing) break;
        const ready = host.logs().filter((l) => l.msg === "worker ready").map((l) => l.pid as number);
        const died = new Set(host.logs().filter((l) => l.msg === "worker died; restarting").map((l) => l.pid as number));
        const alive = ready.filter((p) => !died.has(p));
        const victim = alive[kills % Math.max(1, alive.length)];
        if (victim === undefined) continue;
        try {
          process.kill(victim, "SIGKILL");
          kills++;
        } catch {
          /* already gone */
        }
      }
    })();

    const t0 = Date.now();
    const run = await publishBids(nats.js, { count: BIDS, agents, idPrefix: "wk-bid", retry: true });
    assert.equal(run.acked.size, BIDS);
    // keep killing until the work is done (or a minute), so that kills land mid-processing
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await bidsRecorded(db.sql, "wk-bid")) < BIDS) await new Promise((r) => setTimeout(r, 250));
    const processedMs = Date.now() - t0;
    killing = false;
    await killer;
    assert.ok(kills >= 3, `only ${kills} workers were killed: the run was too short to test anything`);

    await assertNothingLost(db.sql, nats.jsm, { idPrefix: "wk-bid", acked: run.acked });
    const deaths = host.logs().filter((l) => l.msg === "worker died; restarting").length;
    assert.ok(deaths >= kills, `${kills} kills, ${deaths} restarts`);
    const poison = host.logs().filter((l) => l.msg === "past its budget without an outcome; running it alone").length;
    console.log(`workers killed: ${kills}; bids: ${BIDS} recorded in ${processedMs} ms; messages run alone after their budget: ${poison}`);
    assert.equal((await host.stop("SIGTERM")).code, 0);
  });
});
