import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { connect, migrate, type Sql } from "../economy/db.ts";
import { startEmbeddedPostgres, type RunningPostgres } from "../economy/embeddedPostgres.ts";

// A fresh, empty database per test suite, migrated.
//
// With TEST_DATABASE_URL (or DATABASE_URL) set, each suite creates a database with a unique name on
// that server and drops it afterwards. Otherwise one embedded PostgreSQL is started per test
// process, lazily, in a temporary directory (stopped and removed when the process exits), and each
// suite gets its own database in it. Nothing assumes a server the machine already runs.

export type TestDatabase = {
  /** URL of the suite's own database. */
  url: string;
  sql: Sql;
  name: string;
  /** The shared embedded server, when no URL was given. */
  server?: RunningPostgres;
};

type Hooks = { after: (fn: () => Promise<void>) => void };

let embedded: Promise<RunningPostgres> | undefined;

/** The process's embedded server: started on first use, stopped and deleted at process exit. */
export function sharedEmbeddedPostgres(): Promise<RunningPostgres> {
  embedded ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "syntropism-pg-"));
    // as root the server runs as an unprivileged OS user, who must be able to enter this directory
    chmodSync(dir, 0o755);
    const cleanup = () => rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    try {
      const server = await startEmbeddedPostgres({ dataDir: join(dir, "data"), ephemeral: true, settings: { max_connections: 200 } });
      server.unref();
      process.once("exit", () => {
        server.stopSync();
        cleanup();
      });
      return server;
    } catch (err) {
      cleanup();
      throw err;
    }
  })();
  return embedded;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

let counter = 0;
const uniqueName = () => `syntropism_test_${process.pid}_${++counter}_${randomBytes(3).toString("hex")}`;

async function serverUrl(): Promise<{ adminUrl: string; server?: RunningPostgres }> {
  const given = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
  if (given) return { adminUrl: given };
  const server = await sharedEmbeddedPostgres();
  return { adminUrl: server.url, server };
}

async function createDatabase(scope: Hooks, adminUrl: string, options: { template?: string; max?: number }): Promise<{ url: string; sql: Sql; name: string }> {
  const name = uniqueName();
  await admin(adminUrl, (a) => (options.template ? a`CREATE DATABASE ${a(name)} TEMPLATE ${a(options.template)}` : a`CREATE DATABASE ${a(name)}`));
  const url = withDatabase(adminUrl, name);
  const sql = connect(url, { max: options.max ?? 10, applicationName: "syntropism-test" });
  scope.after(async () => {
    await sql.end({ timeout: 5 }).catch(() => {});
    await admin(adminUrl, (a) => a`DROP DATABASE IF EXISTS ${a(name)} WITH (FORCE)`);
  });
  return { url, sql, name };
}

/** A fresh database for one suite, migrated unless `migrate: false`; dropped in the scope's `after`. */
export async function startTestDatabase(scope: Hooks, options: { migrate?: boolean; max?: number } = {}): Promise<TestDatabase> {
  const { adminUrl, server } = await serverUrl();
  const db = await createDatabase(scope, adminUrl, options);
  if (options.migrate ?? true) await migrate(db.sql);
  return { ...db, server };
}

/**
 * For tests that want many fresh databases (a property test's runs, so that one run's state cannot
 * leak into the next): on first use migrates a template, then each `create()` clones it (CREATE
 * DATABASE … TEMPLATE) and `drop()` removes the clone. A clone costs 0.1–0.3 s here.
 */
export function testDatabaseFactory(scope: Hooks): { create(options?: { max?: number }): Promise<TestDatabase & { drop(): Promise<void> }> } {
  let template: Promise<{ adminUrl: string; server?: RunningPostgres; name: string }> | undefined;
  const makeTemplate = async () => {
    const { adminUrl, server } = await serverUrl();
    const db = await createDatabase(scope, adminUrl, { max: 1 });
    await migrate(db.sql);
    await db.sql.end({ timeout: 5 }); // a template must have no connections while it is copied
    return { adminUrl, server, name: db.name };
  };
  return {
    async create(options = {}) {
      const { adminUrl, server, name } = await (template ??= makeTemplate());
      const drops: (() => Promise<void>)[] = [];
      const db = await createDatabase({ after: (fn) => void drops.push(fn) }, adminUrl, { template: name, max: options.max });
      let dropped: Promise<void> | undefined;
      const drop = () =>
        (dropped ??= (async () => {
          for (const d of drops) await d();
        })());
      scope.after(drop);
      return { ...db, server, drop };
    },
  };
}

/**
 * A PostgreSQL of its own that a fault test can restart, stop for a while, crash, or whose
 * connections it can terminate — on the same port and data directory, so clients find it again.
 * Migrated; `sql` is a pool of the test's own (it rides out the faults like any client).
 */
export type RestartablePostgres = {
  url: string;
  port: number;
  sql: Sql;
  /**
   * `fast` (default): active transactions roll back, the server shuts down cleanly.
   * `immediate`: the server quits at once, like a crash; the next start runs crash recovery.
   */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  /** Starts it again on the same port and data; resolves when it accepts connections. */
  start(): Promise<void>;
  /** stop, then start. */
  restart(mode?: "fast" | "immediate"): Promise<void>;
  /** stop for `ms`, then start; resolves when it accepts connections again. */
  outage(ms: number): Promise<void>;
  /** pg_terminate_backend on every other client connection: each client sees its connection dropped. */
  terminateConnections(): Promise<number>;
  /** The current server process's output (for failure dumps). */
  output(): string;
};

export async function startRestartablePostgres(scope: Hooks, options: { settings?: Record<string, string | number | boolean> } = {}): Promise<RestartablePostgres> {
  const dir = mkdtempSync(join(tmpdir(), "syntropism-pg-faults-"));
  chmodSync(dir, 0o755);
  const dataDir = join(dir, "data");
  // synchronous_commit back on (ephemeral turns it off): a commit is in the WAL before the client
  // hears of it, so an immediate shutdown loses nothing that was acknowledged. Off, a crash drops
  // the last ~200 ms of commits whose messages were already acked — a fault of the test's settings,
  // not of the code under test. fsync may stay off: the OS keeps what the server wrote.
  const settings = { max_connections: 200, synchronous_commit: "on", ...options.settings };
  let server = await startEmbeddedPostgres({ dataDir, ephemeral: true, settings });
  const port = server.port;
  const url = server.url;
  const sql = connect(url, { max: 4, applicationName: "syntropism-test" });
  await migrate(sql);
  scope.after(async () => {
    await sql.end({ timeout: 2 }).catch(() => {});
    await server.stop();
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  });
  const stop = async (mode: "fast" | "immediate" = "fast") => {
    if (mode === "fast") return server.stop();
    const child = server.process;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    // SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, backends killed, recovery on start
    child.kill("SIGQUIT");
    await exited;
  };
  const start = async () => {
    // the port was just released, or the last backends of a crashed server are still exiting
    for (let i = 0; ; i++) {
      try {
        server = await startEmbeddedPostgres({ dataDir, port, ephemeral: true, settings });
        return;
      } catch (err) {
        if (i >= 40) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  };
  return {
    url,
    port,
    sql,
    stop,
    start,
    async restart(mode) {
      await stop(mode);
      await start();
    },
    async outage(ms) {
      await stop();
      await new Promise((r) => setTimeout(r, ms));
      await start();
    },
    async terminateConnections() {
      return admin(url, async (a) => {
        const rows = await a<{ n: number }[]>`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`;
        return rows[0]!.n;
      });
    },
    output: () => server.output(),
  };
}
