import { createHash } from "node:crypto";
import { loadSettings } from "../config/settings.ts";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { EconomyError, EconomyErrorCode, MigrationError } from "./errors.ts";
import { effectiveDataDir, runningCluster, startEmbeddedPostgres, type RunningPostgres } from "./embeddedPostgres.ts";

// The economy's connection to Postgres (the `postgres` package) and its migrations: plain SQL
// files economy/migrations/NNN_name.sql, applied in order, each once.

/** A connection pool whose BIGINT columns read as bigint (micro-credits are exact). */
export type Sql = postgres.Sql<{ bigint: bigint }>;
export type TransactionSql = postgres.TransactionSql<{ bigint: bigint }>;
/** Where a ledger operation may run: the pool (it opens its own transaction) or a caller's transaction. */
export type Db = postgres.Sql<any> | postgres.TransactionSql<any>;

export const MIGRATIONS_DIR = fileURLToPath(new URL("./migrations/", import.meta.url));
/** The dev cluster's data directory when neither an option nor DATABASE_URL names a server. */
export const DEFAULT_DATA_DIR = ".data/pg";

export type ConnectOptions = {
  /** Pool size; default 10. */
  max?: number;
  /** Seconds an idle connection is kept; default 30. */
  idleTimeout?: number;
  applicationName?: string;
};

/** Opens a pool on `url` (default DATABASE_URL). Nothing connects until the first query. */
export function connect(url: string | undefined = loadSettings().economy.databaseUrl, options: ConnectOptions = {}): Sql {
  if (!url) throw new EconomyError(EconomyErrorCode.Config, "no database URL: set DATABASE_URL (postgres://user:password@host:port/database)");
  return postgres(url, {
    max: options.max ?? 10,
    idle_timeout: options.idleTimeout ?? 30,
    types: { bigint: postgres.BigInt },
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? "syntropism" },
    // a server that restarts is found again within a second of coming back (the default backoff
    // grows to 20 s); a server that does not answer fails a connection attempt after 10 s, and the
    // host's classifier (classifyEconomyError) turns that into a deferral, not a spent attempt
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** retries, 1),
    connect_timeout: 10,
  });
}

type MigrationFile = { version: number; name: string; file: string; text: string; checksum: string };

const FILE_NAME = /^(\d{3})_([a-z0-9_]+)\.sql$/;

export function readMigrations(dir = MIGRATIONS_DIR): MigrationFile[] {
  const files: MigrationFile[] = [];
  const seen = new Map<number, string>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".sql")).sort()) {
    const m = FILE_NAME.exec(file);
    if (!m) throw new MigrationError(file, "a migration file is named NNN_name.sql (three digits, lower-case name)");
    const version = Number(m[1]);
    const clash = seen.get(version);
    if (clash) throw new MigrationError(file, `has the same number as ${clash}`);
    seen.set(version, file);
    const text = readFileSync(join(dir, file), "utf8");
    files.push({ version, name: m[2]!, file, text, checksum: createHash("sha256").update(text).digest("hex") });
  }
  return files;
}

export type MigrateResult = {
  /** Files applied by this call, in order. */
  applied: string[];
  /** Files that were already applied. */
  current: string[];
  /** Versions recorded in the database that no file here has (a newer deployment applied them). */
  unknown: number[];
};

/** Any bigint: every migrator on every host takes the same lock. */
const MIGRATION_LOCK = 0x73796e74_726f7079n; // "syntropy"

/**
 * Applies the migrations not yet applied, in order, each file in its own transaction under a
 * transaction-scoped advisory lock: several workers starting at once apply each file once (the
 * others wait, then find it recorded). A recorded file whose text has changed is refused.
 */
export async function migrate(sql: postgres.Sql<any>, options: { dir?: string; log?: (msg: string) => void } = {}): Promise<MigrateResult> {
  const files = readMigrations(options.dir);
  const result: MigrateResult = { applied: [], current: [], unknown: [] };
  for (const m of files) {
    await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK.toString()}::bigint)`;
      await tx`CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`;
      const [done] = await tx<{ checksum: string }[]>`SELECT checksum FROM schema_migrations WHERE version = ${m.version}`;
      if (done) {
        if (done.checksum !== m.checksum) {
          throw new MigrationError(
            m.file,
            "was applied to this database with different contents; add a new migration instead of editing an applied one " +
              "(or, for a throw-away dev database, delete it: rm -rf .data/pg)",
          );
        }
        result.current.push(m.file);
        return;
      }
      try {
        await tx.unsafe(m.text);
      } catch (cause) {
        throw new MigrationError(m.file, (cause as Error).message, { cause });
      }
      await tx`INSERT INTO schema_migrations (version, name, checksum) VALUES (${m.version}, ${m.name}, ${m.checksum})`;
      result.applied.push(m.file);
      options.log?.(`applied migration ${m.file}`);
    });
  }
  const known = new Set(files.map((f) => f.version));
  const rows = await sql<{ version: number }[]>`SELECT version FROM schema_migrations ORDER BY version`;
  result.unknown = rows.map((r) => r.version).filter((v) => !known.has(v));
  return result;
}

export type Database = {
  url: string;
  sql: Sql;
  /** Set when this call started the embedded server (close() stops it). */
  embedded?: RunningPostgres;
  /**
   * Set when the database is the embedded cluster (started by this call, or found running):
   * `dataDir` is where it really lives, which as root may differ from the `requested` directory
   * (effectiveDataDir in embeddedPostgres.ts).
   */
  cluster?: { requested: string; dataDir: string; pid: number };
  /** Ends the pool, then stops the embedded server if this call started it. */
  close(): Promise<void>;
};

export type OpenDatabaseOptions = ConnectOptions & {
  /** A server URL; default DATABASE_URL. */
  url?: string;
  /** Without a URL: the embedded cluster's data directory (default .data/pg). */
  dataDir?: string;
  /** Apply migrations (default true). */
  migrate?: boolean;
  log?: (msg: string) => void;
  /** An embedded cluster started now runs away from the terminal's Ctrl-C (`npm start`). Default false. */
  ownProcessGroup?: boolean;
};

/**
 * The database the economy uses: `url` or DATABASE_URL when set; otherwise the embedded cluster in
 * `dataDir` — the one already running there (e.g. under `npm start`), or one started now.
 */
export async function openDatabase(options: OpenDatabaseOptions = {}): Promise<Database> {
  let url = options.url ?? loadSettings().economy.databaseUrl;
  let embedded: RunningPostgres | undefined;
  let cluster: Database["cluster"];
  if (!url) {
    const requested = resolve(options.dataDir ?? DEFAULT_DATA_DIR);
    const dataDir = effectiveDataDir(requested);
    const running = runningCluster(dataDir);
    if (running) {
      url = running.url;
      cluster = { requested, dataDir, pid: running.pid };
    } else {
      embedded = await startEmbeddedPostgres({ dataDir: requested, log: options.log, ownProcessGroup: options.ownProcessGroup });
      url = embedded.url;
      cluster = { requested, dataDir: embedded.dataDir, pid: embedded.pid };
    }
  }
  const sql = connect(url, options);
  const close = async () => {
    await sql.end({ timeout: 5 });
    await embedded?.stop();
  };
  try {
    if (options.migrate ?? true) await migrate(sql, { log: options.log });
  } catch (err) {
    await close();
    throw err;
  }
  return { url, sql, embedded, cluster, close };
}

/**
 * What `npm start` logs about its database: the server, and for the embedded cluster the directory
 * it really lives in (and the one asked for, when that differs) and whether this start created it
 * — initdb is reported only when it ran.
 */
export function databaseLogLine(db: Pick<Database, "url" | "embedded" | "cluster">): { msg: string; fields: Record<string, unknown> } {
  const url = db.url.replace(/:[^:@/]+@/, ":***@");
  if (!db.cluster) return { msg: "PostgreSQL from DATABASE_URL", fields: { url } };
  const { dataDir, requested, pid } = db.cluster;
  const where = { url, data: dataDir, ...(dataDir === requested ? {} : { requested }), pid };
  if (!db.embedded) return { msg: "embedded PostgreSQL already running; using it", fields: { ...where, initdb: false } };
  if (!db.embedded.initialised) return { msg: "embedded PostgreSQL running on its existing cluster", fields: { ...where, initdb: false } };
  return { msg: "embedded PostgreSQL running on a new cluster", fields: { ...where, initdb: true, initdb_ms: Math.round(db.embedded.timings.initdbMs) } };
}
