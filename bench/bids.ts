import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfigFile } from "../host/configFile.ts";
import { applyPlan, planStreams } from "../host/streams.ts";
import { connect as connectDb, migrate } from "../economy/db.ts";
import { startEmbeddedPostgres, type RunningPostgres } from "../economy/embeddedPostgres.ts";
import { mint, openAccount } from "../economy/ledger.ts";
import { cpuMs, descendants } from "./cpu.ts";
import { log, ROOT, round, startBenchServer, verdictOf, waitFor, type BenchResult } from "./lib.ts";
import type { Options } from "./options.ts";

// Bids end to end: N bids are published into the MARKET work queue, then the economy runs
// (`host start --workers W` on functions/) and each bid is validated, recorded in PostgreSQL with
// its reservation, and stated as a bid_placed event on the AUDIT stream. Measured: first to last
// event. PostgreSQL is embedded (or DATABASE_URL), a fresh database per variant; the auction
// window is long, so no clearing runs during the measurement.

const AGENTS = 200;

async function freshDatabase(server: { url: string } | undefined, name: string): Promise<{ url: string; drop(): Promise<void> }> {
  const base = server?.url ?? process.env.DATABASE_URL!;
  const admin = connectDb(base, { max: 1 });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    async drop() {
      const a = connectDb(base, { max: 1 });
      await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await a.end();
    },
  };
}

export async function bids(o: Options): Promise<BenchResult> {
  const nats = await startBenchServer("bids");
  let pg: RunningPostgres | undefined;
  let pgDir: string | undefined;
  if (!process.env.DATABASE_URL) {
    pgDir = mkdtempSync(join(tmpdir(), "syntropism-bench-pg-"));
    pg = await startEmbeddedPostgres({ dataDir: pgDir });
  }
  const config = await loadConfigFile(join(ROOT, "streams.config.ts"));
  const rows: (string | number)[][] = [];
  const variants: Record<string, unknown>[] = [];
  const targets = [];
  try {
    for (const workers of o.bidWorkers) {
      const db = await freshDatabase(pg, `bench_bids_${workers}_${Date.now()}`);
      try {
        for (const s of ["MARKET", "AUDIT"]) await nats.jsm.streams.delete(s).catch(() => {});
        await applyPlan(nats.nc, nats.jsm, await planStreams(nats.jsm, config));
        const sql = connectDb(db.url, { max: 4 });
        await migrate(sql);
        for (let a = 0; a < AGENTS; a++) {
          await openAccount(sql, `agent${a}`);
          await mint(sql, { sourceMsgId: `bench-genesis-${a}`, to: `agent${a}`, amount: 1_000_000_000_000n, kind: "genesis" });
        }
        await sql.end();

        const n = o.bids;
        const body = (i: number) => JSON.stringify({ resource: "cpu", quantity: 1 + (i % 5), price: 0.01 + (i % 7) / 1000 });
        const pending: Promise<unknown>[] = [];
        for (let i = 0; i < n; i++) {
          pending.push(nats.js.publish(`market.bid.agent${i % AGENTS}`, body(i), { msgID: `bench-bid-${i}` }));
          if (pending.length >= 1000) await Promise.all(pending.splice(0));
        }
        await Promise.all(pending);

        const child = spawn(process.execPath, [join(ROOT, "bin/host.mjs"), "start", "--workers", String(workers), "--apply", "--grace", "2000"], {
          cwd: ROOT,
          env: { ...process.env, NATS_URL: nats.url, DATABASE_URL: db.url, ECONOMY_WINDOW_MS: "3600000", LOG_LEVEL: "warn", ECONOMY_DB_POOL: "20" },
          stdio: ["ignore", "ignore", "pipe"],
        });
        let err = "";
        child.stderr!.on("data", (c) => (err += c));
        const events = async () => {
          const info = await nats.jsm.streams.info("AUDIT", { subjects_filter: "market.>" });
          const s = info.state.subjects ?? {};
          return (s["market.bid_placed"] ?? 0) + (s["market.bid_rejected"] ?? 0);
        };
        await waitFor("first event", async () => (await events()) > 0 || undefined, 60_000, 5).catch((e) => {
          child.kill("SIGKILL");
          throw new Error(`${(e as Error).message}\n${err.slice(-3000)}`);
        });
        const t0 = performance.now();
        const pids = [child.pid!, ...descendants(child.pid!)];
        const cpu0 = cpuMs(pids);
        await waitFor(`${n} bid events`, async () => (await events()) >= n || undefined, 600_000, 20).catch((e) => {
          throw new Error(`${(e as Error).message}\n${err.slice(-2000)}`);
        });
        const seconds = (performance.now() - t0) / 1000;
        const cpu = (cpuMs([child.pid!, ...descendants(child.pid!)]) ?? 0) - (cpu0 ?? 0);
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
        const rate = Math.round(n / seconds);
        log(`bids --workers ${workers}: ${rate} bids/s (${n} in ${seconds.toFixed(2)} s)`);
        rows.push(["bids", `economy --workers ${workers}`, n, round(seconds, 2), rate, round((cpu * 1000) / n, 1), `≥ ${o.minBids}/s`, verdictOf(rate >= o.minBids)]);
        variants.push({ variant: `workers${workers}`, bids: n, seconds: round(seconds, 3), bidsPerSec: rate, hostCpuUsPerBid: round((cpu * 1000) / n, 1) });
        targets.push({ what: `bids/s --workers ${workers}`, verdict: verdictOf(rate >= o.minBids), detail: `${rate} bids/s (target ≥ ${o.minBids})` });
      } finally {
        await db.drop();
      }
    }
  } finally {
    await nats.stop();
    await pg?.stop();
    if (pgDir) rmSync(pgDir, { recursive: true, force: true });
  }
  return {
    name: "bids",
    options: { bids: o.bids, agents: AGENTS, workers: o.bidWorkers, database: pg ? "embedded PostgreSQL 18" : "DATABASE_URL" },
    table: { headers: ["bench", "variant", "bids", "seconds", "bids/s", "host cpu µs/bid", "target", "verdict"], rows },
    variants,
    targets,
    notes: ["bids/s: first to last bid event on the AUDIT stream (each bid: validated, recorded with its reservation in PostgreSQL, event published); bids pre-published"],
    natsVersion: nats.version,
  };
}
