import { Kvm } from "@nats-io/kv";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startRestartablePostgres, type RestartablePostgres } from "./helpers/pg.ts";
import { waitFor } from "./helpers/host.ts";
import { acceptableBid, assertNothingLost, firstBidCommittedAfter, seedAgents, startEconomyHost } from "./helpers/chaos.ts";
import { Economy } from "../economy/resource.ts";
import { loadSettings } from "../config/settings.ts";
import { createLogger } from "../host/log.ts";
import { isConnectionError } from "../economy/errors.ts";

// Bids flow into `host start --workers 2` while PostgreSQL is restarted, has every connection
// terminated, and is stopped for 30 s. No worker exits, every acknowledged bid ends in the ledger
// exactly once, nothing is dead-lettered (a lost database is `transient`: deferred without spending
// attempts), and processing resumes soon after the database is back (measured). Before that, a
// worker's first connection while the database is down: it fails as a connection error and the
// pool is opened again once the database is back. bench/faults-pg.ts runs longer versions.

const OUTAGE_MS = Number(process.env.FAULT_PG_OUTAGE_MS ?? 30_000);

describe("faults: PostgreSQL restarted, connections dropped, 30 s outage", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let pg: RestartablePostgres;
  before(async () => {
    nats = await startTestNats(hooks);
    pg = await startRestartablePostgres(hooks);
  });

  it("a first connection while the database is down fails as a connection error, and connects once it is back", async (t) => {
    const economy = new Economy(loadSettings({ AGENT_WORKSPACES: process.env.AGENT_WORKSPACES, DATABASE_URL: pg.url }).economy, { kv: (b) => new Kvm(nats.nc).open(b), log: createLogger({ level: "error" }) });
    t.after(() => economy.close());
    await pg.stop();
    const first = economy.database();
    await assert.rejects(first, (err) => isConnectionError(err));
    assert.equal(economy.database(), first, "a call within the backoff shares the failure instead of opening another pool");
    await pg.start();
    const back = Date.now();
    const sql = await waitFor("the pool opened again", () => economy.database().catch(() => undefined), 10_000, 20);
    const [r] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM market_state`;
    assert.equal(r!.n, 4);
    console.log(`first connection: pool open ${Date.now() - back} ms after the database was back`);
  });

  it("no worker exits, nothing is lost or dead-lettered, processing resumes", async () => {
    const agents = await seedAgents(pg.sql, "pf", 20);
    const { host } = await startEconomyHost(hooks, { natsUrl: nats.url, databaseUrl: pg.url, workers: 2 });

    // a steady flow of bids, ~250/s, for the whole test
    const acked = new Set<string>();
    let flowing = true;
    let sent = 0;
    const publisher = (async () => {
      while (flowing) {
        const batch = Array.from({ length: 25 }, () => sent++);
        await Promise.all(
          batch.map(async (i) => {
            const id = `pf-bid-${i}`;
            await nats.js.publish(`market.bid.${agents[i % agents.length]}`, acceptableBid(i), { msgID: id });
            acked.add(id);
          }),
        );
        await sleep(100);
      }
    })();

    const firstCommitAfter = (backAt: number) => firstBidCommittedAfter(pg.sql, backAt);
    const resumed: Record<string, number> = {};

    await sleep(1500);
    await pg.restart();
    resumed.restart = await firstCommitAfter(Date.now());

    await sleep(1500);
    const terminated = await pg.terminateConnections();
    assert.ok(terminated > 0, "no connection to terminate: the workers were not using the database");
    resumed.terminate = await firstCommitAfter(Date.now());

    await sleep(1500);
    await pg.outage(OUTAGE_MS);
    resumed.outage = await firstCommitAfter(Date.now());

    await sleep(1500);
    flowing = false;
    await publisher;

    await assertNothingLost(pg.sql, nats.jsm, { idPrefix: "pf-bid", acked }).catch(async (err) => {
      const open = await pg.sql`SELECT window_id, count(*)::int AS n FROM bids WHERE status = 'open' GROUP BY 1 ORDER BY 1`;
      const win = await pg.sql`SELECT max(window_id) AS w, count(*)::int AS n FROM market_windows`;
      console.log("open bids by window", JSON.stringify(open), "cleared windows", JSON.stringify(win), "current window", Math.floor(Date.now() / 2000));
      for (const l of host.logs().filter((l) => /clearAuction|tick|relay/i.test(String(l.fn)) && l.level !== "info")) console.log(JSON.stringify(l).slice(0, 400));
      throw err;
    });
    assert.deepEqual(host.logs().filter((l) => l.msg === "worker died; restarting"), [], "a worker exited");
    assert.deepEqual(host.logs().filter((l) => String(l.msg).startsWith("uncaught exception")), [], "an uncaught exception");
    // what the workers said meanwhile, by message (a deferral is a debug line and not among them)
    const said: Record<string, number> = {};
    for (const l of host.logs()) if (l.level === "warn" || l.level === "error") said[String(l.msg)] = (said[String(l.msg)] ?? 0) + 1;
    console.log(`bids ${acked.size}; first bid committed after the database was back: ${JSON.stringify(resumed)} ms; warnings and errors: ${JSON.stringify(said)}`);
    assert.equal((await host.stop("SIGTERM")).code, 0);
  });
});
