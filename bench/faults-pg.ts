import { setTimeout as sleep } from "node:timers/promises";
import { checkLedger } from "../economy/ledger.ts";
import { acceptableBid, bidsRecorded, deadLettersByReason, firstBidCommittedAfter, seedAgents } from "../testing/faults.ts";
import { runCli, startCli, type CliProcess } from "../testing/cli.ts";
import { startRestartablePostgres, type RestartablePostgres } from "../testing/postgres.ts";
import { log, round, startBenchServer, verdictOf, waitFor, type BenchResult, type BenchServer, type Cell } from "./lib.ts";
import type { Options } from "./options.ts";

// PostgreSQL faults under a steady flow of bids (`npm run bench -- faults-pg`, opt-in): the real
// economy runs in `host start --workers N` while its database is, in turn, down as the workers
// start, restarted (fast shutdown), crashed (immediate shutdown, recovery on start), stripped of
// every connection (pg_terminate_backend), and stopped for each of --pg-outages seconds. For each
// fault: how long until the first bid is seen committed after the database is back, how long until
// the backlog built up meanwhile is recorded, how many deliveries were deferred, whether a worker
// died. At the end: every acknowledged bid in the ledger exactly once, none dead-lettered, the
// ledger balanced. test/pg.faults.test.ts is the short version that runs with the tests.

const ID_PREFIX = "fpg-bid";
/** Time between faults: the flow settles and the backlog of the last one drains. */
const SETTLE_MS = 5000;

type Fault = { fault: string; round: number; run: (pg: RestartablePostgres) => Promise<void> };

/** Bids published at a steady rate, each retried with the same msg id until the server acknowledges it. */
function startFlow(nats: BenchServer, agents: string[], perSecond: number) {
  const acked = new Set<string>();
  const ackedAt = new Map<string, number>();
  let sent = 0;
  let flowing = true;
  const tickMs = 100;
  const perTick = Math.max(1, Math.round((perSecond * tickMs) / 1000));
  const one = async (i: number) => {
    const id = `${ID_PREFIX}-${i}`;
    for (;;) {
      try {
        await nats.js.publish(`market.bid.${agents[i % agents.length]}`, acceptableBid(i), { msgID: id, timeout: 5000 });
        acked.add(id);
        ackedAt.set(id, Date.now());
        return;
      } catch {
        await sleep(100);
      }
    }
  };
  const running = (async () => {
    const inFlight = new Set<Promise<void>>();
    for (let next = performance.now(); flowing; next += tickMs) {
      for (let k = 0; k < perTick; k++) {
        const p = one(sent++).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await sleep(Math.max(0, next + tickMs - performance.now()));
    }
    await Promise.all(inFlight);
  })();
  return {
    acked,
    ackedAt,
    async stop() {
      flowing = false;
      await running;
    },
  };
}

/** Deliveries deferred so far, all workers and functions together, from $SRV.STATS. */
async function deferrals(nats: BenchServer): Promise<number> {
  let total = 0;
  const replies = await nats.nc.requestMany("$SRV.STATS.syntropism", "", { maxWait: 1000, strategy: "stall", stall: 200 }).catch(() => null);
  if (!replies) return NaN;
  try {
    for await (const m of replies) {
      const r = m.json<{ endpoints?: { data?: { deferred?: number } }[] }>();
      for (const e of r.endpoints ?? []) total += e.data?.deferred ?? 0;
    }
  } catch {
    // no responders
  }
  return total;
}

const countLogs = (host: CliProcess, pred: (msg: string) => boolean) => host.logs().filter((l) => pred(String(l.msg))).length;
const died = (msg: string) => msg === "worker died; restarting";
const uncaught = (msg: string) => msg.startsWith("uncaught exception");
const unhandled = (msg: string) => msg.startsWith("unhandled promise rejection");

export async function faultsPg(o: Options): Promise<BenchResult> {
  const cleanups: (() => Promise<void>)[] = [];
  const scope = { after: (fn: () => Promise<void>) => void cleanups.push(fn) };
  const nats = await startBenchServer("faults-pg");
  cleanups.push(() => nats.stop());
  const rows: Cell[][] = [];
  const variants: Record<string, unknown>[] = [];
  const targets = [];
  const started = performance.now();
  try {
    const pg = await startRestartablePostgres(scope);
    const agents = await seedAgents(pg.sql, "fpg", 50);
    const env = { NATS_URL: nats.url, DATABASE_URL: pg.url, ECONOMY_WINDOW_MS: "2000", LOG_LEVEL: "info" };
    const applied = await runCli(["streams", "apply"], env);
    if (applied.code !== 0) throw new Error(`streams apply failed:\n${applied.stderr}`);

    // the first fault starts before the workers: they start while the database is down
    await pg.stop();
    const downSince = performance.now();
    const host = startCli(scope, ["start", "--workers", String(o.pgWorkers)], env);
    await host.waitForLog("workers ready", (l) => l.msg === "all workers ready", 60_000);
    const flow = startFlow(nats, agents, o.pgRate);

    const faults: Fault[] = [{ fault: "down while the workers start (5 s)", round: 1, run: async (p) => {
      await sleep(Math.max(0, 5000 - (performance.now() - downSince)));
      await p.start();
    } }];
    for (let r = 1; r <= o.pgRounds; r++) faults.push({ fault: "restart (fast shutdown)", round: r, run: (p) => p.restart("fast") });
    for (let r = 1; r <= o.pgRounds; r++) faults.push({ fault: "crash (immediate shutdown, recovery)", round: r, run: (p) => p.restart("immediate") });
    for (let r = 1; r <= o.pgRounds; r++) faults.push({ fault: "every connection terminated", round: r, run: async (p) => void (await p.terminateConnections()) });
    for (const s of o.pgOutages) faults.push({ fault: `stopped for ${s} s`, round: 1, run: (p) => p.outage(s * 1000) });

    // when each fault began (Date.now()), to say in which one a missing bid was acknowledged
    const began: { label: string; at: number }[] = [{ label: faults[0]!.fault, at: Date.now() - (performance.now() - downSince) }];
    for (const [i, f] of faults.entries()) {
      if (i > 0) await sleep(SETTLE_MS);
      if (i > 0) began.push({ label: `${f.fault} #${f.round}`, at: Date.now() });
      const deferredBefore = await deferrals(nats);
      const before = { acked: flow.acked.size, died: countLogs(host, died) };
      const t0 = performance.now();
      log(`faults-pg: ${f.fault}${o.pgRounds > 1 && f.round ? ` #${f.round}` : ""}`);
      await f.run(pg);
      const backAt = Date.now();
      const downS = (performance.now() - (i === 0 ? downSince : t0)) / 1000;
      const backlog = flow.acked.size;
      const firstMs = await firstBidCommittedAfter(pg.sql, backAt);
      const drainedMs = await waitFor("the backlog recorded", async () => ((await bidsRecorded(pg.sql, ID_PREFIX)) >= backlog ? Date.now() - backAt : undefined), 300_000, 100);
      const deferred = (await deferrals(nats)) - deferredBefore;
      const workersDied = countLogs(host, died) - before.died;
      const during = backlog - before.acked;
      rows.push([f.fault, f.round, round(downS, 1), during, firstMs, drainedMs, deferred, workersDied]);
      variants.push({ fault: f.fault, round: f.round, downS: round(downS, 2), bidsDuringFault: during, firstCommitAfterBackMs: firstMs, backlogRecordedMs: drainedMs, deferrals: deferred, workersDied });
    }
    await sleep(SETTLE_MS);
    await flow.stop();

    // the verdict
    const acked = flow.acked;
    await waitFor("every acknowledged bid recorded", async () => ((await bidsRecorded(pg.sql, ID_PREFIX)) >= acked.size ? true : undefined), 300_000, 200).catch(() => {});
    const recorded = await pg.sql<{ id: string; n: number }[]>`
      SELECT source_msg_id AS id, count(*)::int AS n FROM bids WHERE source_msg_id LIKE ${`${ID_PREFIX}-%`} GROUP BY 1`;
    const seen = new Set(recorded.map((r) => r.id));
    const missingIds = [...acked].filter((id) => !seen.has(id));
    const missing = missingIds.length;
    // by the fault during or after which each was acknowledged, and how long before that fault began
    const missingBy: Record<string, { n: number; ackedBeforeFaultMs: number[] }> = {};
    for (const id of missingIds) {
      const at = flow.ackedAt.get(id)!;
      const next = began.find((b) => b.at >= at) ?? { label: "after the last fault", at };
      const e = (missingBy[next.label] ??= { n: 0, ackedBeforeFaultMs: [] });
      e.n++;
      if (e.ackedBeforeFaultMs.length < 5) e.ackedBeforeFaultMs.push(next.at - at);
    }
    const twice = recorded.filter((r) => r.n > 1).length;
    const dead = await deadLettersByReason(nats.jsm, `${ID_PREFIX}-`);
    const deadTotal = Object.values(dead).reduce((a, b) => a + b, 0);
    const ledger = await checkLedger(pg.sql);
    const deaths = countLogs(host, died);
    const exceptions = countLogs(host, uncaught);
    const rejections = countLogs(host, unhandled);
    const firsts = variants.map((v) => v.firstCommitAfterBackMs as number);
    const worstFirst = Math.max(...firsts);
    targets.push(
      { what: "no worker exited", verdict: verdictOf(deaths === 0 && exceptions === 0), detail: `${deaths} worker deaths, ${exceptions} uncaught exceptions, ${rejections} unhandled rejections (logged, survived)` },
      { what: "every acknowledged bid in the ledger exactly once", verdict: verdictOf(missing === 0 && twice === 0), detail: `${acked.size} acknowledged, ${missing} missing${missing ? ` (acknowledged just before: ${JSON.stringify(missingBy)})` : ""}, ${twice} recorded twice` },
      { what: "nothing dead-lettered", verdict: verdictOf(deadTotal === 0), detail: deadTotal === 0 ? "0" : JSON.stringify(dead) },
      { what: "ledger check", verdict: verdictOf(ledger.ok), detail: ledger.ok ? "balanced" : JSON.stringify(ledger, (_k, v) => (typeof v === "bigint" ? v.toString() : v)) },
      { what: `first bid within ${o.pgMaxResumeMs} ms of the database's return`, verdict: verdictOf(worstFirst <= o.pgMaxResumeMs), detail: `worst ${worstFirst} ms (median ${firsts.sort((a, b) => a - b)[Math.floor(firsts.length / 2)]} ms)` },
    );
    const stopped = await host.stop("SIGTERM");
    if (stopped.code !== 0) targets.push({ what: "host stops cleanly", verdict: verdictOf(false), detail: `exit ${stopped.code}` });
    return {
      name: "faults-pg",
      options: { workers: o.pgWorkers, bidsPerSec: o.pgRate, rounds: o.pgRounds, outagesS: o.pgOutages, settleMs: SETTLE_MS, database: "embedded PostgreSQL 18 (fsync off)", totalS: round((performance.now() - started) / 1000, 1) },
      table: { headers: ["fault", "round", "down s", "bids meanwhile", "first commit after back ms", "backlog recorded ms", "deferrals", "workers died"], rows },
      variants,
      targets,
      notes: [
        "first commit: from the database accepting connections again to the first bid seen committed (polled every 20 ms)",
        "backlog recorded: until every bid acknowledged by the time the database was back is in the ledger",
        "deferrals: deliveries handed back without spending an attempt (a transient error), all functions",
      ],
      natsVersion: nats.version,
    };
  } finally {
    for (const c of cleanups.reverse()) await c().catch((err) => log(`faults-pg: cleanup failed: ${(err as Error).message}`));
  }
}
