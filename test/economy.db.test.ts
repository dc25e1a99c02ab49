import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { runNode, type RunResult } from "./helpers/host.ts";
import { connect, migrate, MIGRATIONS_DIR, openDatabase, readMigrations, type Sql } from "../economy/db.ts";
import { effectiveDataDir, EmbeddedPostgresError, runningCluster, startEmbeddedPostgres } from "../economy/embeddedPostgres.ts";
import { MigrationError } from "../economy/errors.ts";
import { checkLedger, mint, openAccount, transfer } from "../economy/ledger.ts";
import { suiteScope } from "./helpers/nats.ts";
import { startTestDatabase } from "./helpers/pg.ts";

// Migrations (ordered, once, concurrently safe, refusing edits), the schema's own guards,
// checkLedger and `economy ledger check` on a corrupted ledger, and the embedded PostgreSQL.

const ROOT = resolve(import.meta.dirname, "..");

function runCli(args: string[], env: Record<string, string>): Promise<RunResult> {
  return runNode(["--import", "tsx", join(ROOT, "economy/cli.ts"), ...args], env);
}

const tempDir = (hooks: { after: (fn: () => Promise<void>) => void }, prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755); // as root, PostgreSQL runs as another OS user who must enter it
  hooks.after(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

describe("migrations", () => {
  const hooks = suiteScope(after);

  it("apply in order, once, even when several workers start at once", async () => {
    const { url, sql } = await startTestDatabase(hooks, { migrate: false });
    const pools = [0, 1, 2, 3].map(() => connect(url, { max: 2 }));
    hooks.after(async () => void (await Promise.all(pools.map((p) => p.end()))));
    const results = await Promise.all(pools.map((p) => migrate(p)));
    const files = readMigrations();
    assert.ok(files.length >= 3);
    assert.deepEqual(files.slice(0, 3).map((f) => f.file), ["001_agents_ledger.sql", "002_market.sql", "003_executions_attention.sql"]);
    const applied = results.flatMap((r) => r.applied).sort();
    assert.deepEqual(applied, files.map((f) => f.file), "each file applied by exactly one worker");
    for (const r of results) assert.deepEqual([...r.current, ...r.applied].sort(), applied);
    const rows = await sql<{ version: number; name: string }[]>`SELECT version, name FROM schema_migrations ORDER BY version`;
    assert.deepEqual(rows.map((r) => `${r.version} ${r.name}`), files.map((f) => `${f.version} ${f.name}`));
    const again = await migrate(sql);
    assert.deepEqual(again, { applied: [], current: files.map((f) => f.file), unknown: [] });
  });

  it("refuse an applied file whose text changed, and badly named files", async () => {
    const { sql } = await startTestDatabase(hooks);
    const dir = tempDir(hooks, "syntropism-migrations-");
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    writeFileSync(join(dir, "002_market.sql"), "-- edited\n", { flag: "a" });
    await assert.rejects(migrate(sql, { dir }), (e: Error) => e instanceof MigrationError && e.code === "MIGRATION_FAILED" && /002_market\.sql.*different contents/.test(e.message));
    const bad = tempDir(hooks, "syntropism-migrations-");
    writeFileSync(join(bad, "4_x.sql"), "SELECT 1;");
    await assert.rejects(migrate(sql, { dir: bad }), /4_x\.sql: a migration file is named NNN_name\.sql/);
  });

  it("roll a failing file back entirely and keep the ones before it", async () => {
    const { sql } = await startTestDatabase(hooks, { migrate: false });
    const dir = tempDir(hooks, "syntropism-migrations-");
    writeFileSync(join(dir, "001_one.sql"), "CREATE TABLE one (id int);");
    writeFileSync(join(dir, "002_two.sql"), "CREATE TABLE two (id int);\nSELECT no_such_function();");
    await assert.rejects(migrate(sql, { dir }), (e: Error) => e instanceof MigrationError && /002_two\.sql: function no_such_function/.test(e.message));
    const [t] = await sql`SELECT to_regclass('one') AS one, to_regclass('two') AS two`;
    assert.deepEqual({ ...t }, { one: "one", two: null });
    assert.deepEqual((await sql`SELECT version FROM schema_migrations`).map((r) => r.version), [1]);
  });
});

describe("schema guards", () => {
  const hooks = suiteScope(after);
  let sql: Sql;

  before(async () => {
    ({ sql } = await startTestDatabase(hooks));
    await openAccount(sql, "a1");
    await openAccount(sql, "a2");
    await mint(sql, { sourceMsgId: "g1", to: "a1", amount: 100n, kind: "genesis" });
  });

  it("balances change only through ledger entries", async () => {
    await assert.rejects(sql`UPDATE accounts SET balance = 1000 WHERE id = 'agent:a2'`, /balance changes only through ledger entries/);
  });

  it("the ledger is append-only", async () => {
    await assert.rejects(sql`UPDATE ledger_entries SET delta = delta * 2`, /ledger_entries is append-only/);
    await assert.rejects(sql`DELETE FROM ledger_transactions`, /ledger_transactions is append-only/);
    await assert.rejects(sql`TRUNCATE ledger_entries`, /ledger_entries is append-only/);
  });

  it("a transaction that does not balance is refused at commit", async () => {
    await assert.rejects(
      sql.begin(async (tx) => {
        const [t] = await tx`INSERT INTO ledger_transactions (source_msg_id, kind) VALUES ('bad-1', 'transfer') RETURNING id`;
        await tx`INSERT INTO ledger_entries (tx_id, account_id, delta) VALUES (${t!.id}, 'agent:a1', -10), (${t!.id}, 'agent:a2', 9)`;
      }),
      /ledger transaction \d+ does not balance \(sum -1, 2 entries\)/,
    );
    await assert.rejects(sql`INSERT INTO ledger_transactions (source_msg_id, kind) VALUES ('bad-2', 'transfer')`, /does not balance \(sum 0, 0 entries\)/);
  });

  it("an agent balance never goes below zero, even bypassing the ledger API", async () => {
    await assert.rejects(
      sql.begin(async (tx) => {
        const [t] = await tx`INSERT INTO ledger_transactions (source_msg_id, kind) VALUES ('bad-3', 'transfer') RETURNING id`;
        await tx`INSERT INTO ledger_entries (tx_id, account_id, delta) VALUES (${t!.id}, 'agent:a1', -101), (${t!.id}, 'agent:a2', 101)`;
      }),
      /accounts_agent_not_negative/,
    );
  });

  it("one clearing per window; a bid's amount is quantity × price", async () => {
    await sql`INSERT INTO market_windows (window_id, source_msg_id) VALUES (7, 'tick:7')`;
    await assert.rejects(sql`INSERT INTO market_windows (window_id, source_msg_id) VALUES (7, 'tick:7-again')`, /market_windows_pkey/);
    await assert.rejects(
      sql`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, source_msg_id) VALUES ('a1', 8, 'cpu', 3, 5, 14, 'bid-x')`,
      /bids_check|amount/,
    );
    await assert.rejects(
      sql`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, source_msg_id) VALUES ('a1', 8, 'gpu', 1, 1, 1, 'bid-y')`,
      /bids_resource_check/,
    );
    // a bundle bid is one unit at its whole price, with its components; a single bid has none
    await assert.rejects(sql`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, source_msg_id) VALUES ('a1', 8, 'bundle', 1, 5, 5, 'bid-z')`, /bids_bundle/);
    await assert.rejects(
      sql`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, source_msg_id, components) VALUES ('a1', 8, 'bundle', 2, 5, 10, 'bid-z', '{"cpu":1}')`,
      /bids_bundle/,
    );
    await assert.rejects(
      sql`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, source_msg_id, components) VALUES ('a1', 8, 'cpu', 1, 5, 5, 'bid-z', '{"cpu":1}')`,
      /bids_bundle/,
    );
  });
});

describe("checkLedger and `economy ledger check`", () => {
  const hooks = suiteScope(after);

  it("pass on a sound ledger: exit 0, the figures printed", async () => {
    const { url, sql } = await startTestDatabase(hooks);
    for (const a of ["x", "y"]) await openAccount(sql, a);
    await mint(sql, { sourceMsgId: "g-x", to: "x", amount: 5_000_000n, kind: "genesis" });
    await mint(sql, { sourceMsgId: "r-x", to: "x", amount: 250_000n, kind: "reward" });
    await transfer(sql, { sourceMsgId: "t-1", from: "x", to: "y", amount: 1_000_000n });
    const out = await runCli(["ledger", "check"], { DATABASE_URL: url });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /ledger check: ok/);
    assert.match(out.stdout, /Σ agent balances\s+5\.25 credits \(5250000 µ\)/);
    assert.match(out.stdout, /genesis\s+5 credits/);
    assert.match(out.stdout, /minted\s+0\.25 credits/);
    const json = await runCli(["ledger", "check", "--json"], { DATABASE_URL: url });
    assert.equal(JSON.parse(json.stdout).totalAgents, "5250000");
  });

  it("report every broken invariant: exit 1", async (t) => {
    const { url, sql } = await startTestDatabase(hooks);
    const [su] = await sql`SELECT rolsuper FROM pg_roles WHERE rolname = current_user`;
    if (!su?.rolsuper) return t.skip("needs a superuser to switch the guards off");
    for (const a of ["x", "y"]) await openAccount(sql, a);
    await mint(sql, { sourceMsgId: "g-x", to: "x", amount: 100n, kind: "genesis" });
    // corrupt it behind the guards' back, as a bad manual fix would
    await sql`ALTER TABLE accounts DROP CONSTRAINT accounts_agent_not_negative`;
    await sql.begin(async (tx) => {
      await tx`SET LOCAL session_replication_role = replica`;
      const [t1] = await tx`INSERT INTO ledger_transactions (source_msg_id, kind) VALUES ('half', 'transfer') RETURNING id`;
      await tx`INSERT INTO ledger_entries (tx_id, account_id, delta) VALUES (${t1!.id}, 'agent:x', -30)`;
      await tx`UPDATE accounts SET balance = -5 WHERE id = 'agent:y'`;
    });
    const check = await checkLedger(sql);
    assert.equal(check.ok, false);
    assert.deepEqual(check.negative, [{ accountId: "agent:y", balance: -5n }]);
    assert.deepEqual(check.unbalancedTx.map((u) => [u.sourceMsgId, u.sum, u.entries]), [["half", -30n, 1]]);
    assert.deepEqual(check.drift.map((d) => [d.accountId, d.balance, d.entries]), [["agent:x", 100n, 70n], ["agent:y", -5n, 0n]]);
    assert.equal(check.totalAgents, 95n);
    assert.equal(check.expected, 100n);
    const out = await runCli(["ledger", "check"], { DATABASE_URL: url });
    assert.equal(out.code, 1);
    assert.match(out.stdout, /ledger check: FAILED/);
    assert.match(out.stdout, /negative balances\s+agent:y -5/);
    assert.match(out.stdout, /unbalanced transactions\s+#\d+ half \(sum -30, 1 entries\)/);
  });

  it("say what to do on a database without the ledger, and on a bad command", async () => {
    const { url } = await startTestDatabase(hooks, { migrate: false });
    const out = await runCli(["ledger", "check"], { DATABASE_URL: url });
    assert.equal(out.code, 1);
    assert.match(out.stderr, /run `npm run economy -- migrate`/);
    const usage = await runCli(["ledger", "fix"], { DATABASE_URL: url });
    assert.equal(usage.code, 64);
  });
});

describe("embedded PostgreSQL", () => {
  const hooks = suiteScope(after);

  it("initialises once, keeps its data and password across restarts, refuses a second server on the same directory", async () => {
    const dir = join(tempDir(hooks, "syntropism-embedded-"), "pg");
    const first = await startEmbeddedPostgres({ dataDir: dir, ephemeral: true });
    hooks.after(() => first.stop());
    assert.equal(first.initialised, true);
    const sql = connect(first.url, { max: 1 });
    await migrate(sql);
    await openAccount(sql, "kept");
    await sql.end();

    const seen = runningCluster(dir);
    assert.equal(seen?.port, first.port);
    await assert.rejects(startEmbeddedPostgres({ dataDir: dir }), (e: Error) => e instanceof EmbeddedPostgresError && /already runs on/.test(e.message));
    // openDatabase uses the server already running there
    const db = await openDatabase({ dataDir: dir, max: 1 });
    assert.equal(db.embedded, undefined);
    assert.equal(db.url, first.url);
    await db.close();

    await first.stop();
    await first.stop(); // twice is fine
    assert.equal(runningCluster(dir), undefined);
    const second = await startEmbeddedPostgres({ dataDir: dir, ephemeral: true });
    hooks.after(() => second.stop());
    assert.equal(second.initialised, false);
    assert.equal(second.password, first.password);
    const sql2 = connect(second.url, { max: 1 });
    assert.deepEqual((await sql2`SELECT id FROM agents`).map((r) => r.id), ["kept"]);
    await sql2.end();
    console.log(`embedded PostgreSQL: initdb ${Math.round(first.timings.initdbMs)} ms + start ${Math.round(first.timings.startMs)} ms; restart ${Math.round(second.timings.startMs)} ms (as OS user ${first.osUser})`);
  });

  it("as root, keeps a cluster the PostgreSQL user cannot reach in the temporary directory instead", { skip: process.getuid?.() !== 0 && "runs as root only" }, async () => {
    const dir = tempDir(hooks, "syntropism-embedded-");
    const hidden = join(dir, "private");
    mkdirSync(hidden, { mode: 0o700 });
    const asked = join(hidden, "pg");
    const where = effectiveDataDir(asked);
    assert.notEqual(where, asked);
    assert.ok(where.startsWith(tmpdir()));
    const pg = await startEmbeddedPostgres({ dataDir: asked });
    hooks.after(async () => {
      await pg.stop();
      rmSync(where, { recursive: true, force: true });
    });
    assert.ok(existsSync(join(where, "PG_VERSION")), "the cluster is not where effectiveDataDir says");
    assert.equal(runningCluster(effectiveDataDir(asked))?.port, pg.port);
  });
});
