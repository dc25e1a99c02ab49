import { NonRetriableError, type FunctionContext } from "../host/mod.ts";
import { isRefusal } from "./errors.ts";
import { Header } from "../host/headers.ts";
import { resolve } from "node:path";
import { connect, DEFAULT_DATA_DIR, migrate, type Sql } from "./db.ts";
import { effectiveDataDir, runningCluster } from "./embeddedPostgres.ts";
import { EconomyError, EconomyErrorCode, isConnectionError } from "./errors.ts";
import type { Cause } from "./events.ts";
import { RESOURCES, type Resource } from "./auction.ts";
import { toMicro } from "./money.ts";

// What every economy function shares in one worker: the database pool (DATABASE_URL, migrated once
// per process), the market's configuration, and the cause of the message being handled.

export type MarketDefaults = Record<Resource, { supply: number; price: number; floor: number; target: number }>;

/** Units: cpu millicores, memory MiB, tokens LLM tokens, attention prompts — per window. Prices in credits per unit. */
export const DEFAULT_MARKET: MarketDefaults = {
  cpu: { supply: 2000, price: 0.001, floor: 0.0001, target: 0.5 },
  memory: { supply: 4096, price: 0.0005, floor: 0.00005, target: 0.5 },
  tokens: { supply: 100_000, price: 0.00001, floor: 0.000001, target: 0.5 },
  attention: { supply: 1, price: 1, floor: 0.1, target: 0.5 },
};

export type EconomyConfig = { windowMs: number; market: MarketDefaults };

export function economyConfig(env: NodeJS.ProcessEnv = process.env): EconomyConfig {
  const windowMs = Number(env.ECONOMY_WINDOW_MS ?? 1000);
  if (!Number.isInteger(windowMs) || windowMs < 100) throw new Error(`ECONOMY_WINDOW_MS must be an integer ≥ 100, got ${env.ECONOMY_WINDOW_MS}`);
  const market = structuredClone(DEFAULT_MARKET);
  if (env.ECONOMY_MARKET) {
    const over = JSON.parse(env.ECONOMY_MARKET) as Partial<Record<Resource, Partial<MarketDefaults[Resource]>>>;
    for (const r of RESOURCES) Object.assign(market[r], over[r] ?? {});
  }
  return { windowMs, market };
}

let shared: Promise<Sql> | undefined;
/** Whether `shared` failed, how many first connections failed in a row, when the next may start. */
let failed = false;
let failures = 0;
let retryAt = 0;

/** Pause after `n` failed first connections in a row: short while the server is only down. */
function retryDelayMs(n: number, err: unknown): number {
  // a lost server comes back by itself: try again within a second of it; anything else (a
  // refused password, a migration that does not apply) needs a person, so do not hammer it
  const cap = isConnectionError(err) ? 1000 : 30_000;
  return Math.min(cap, 100 * 2 ** Math.min(n - 1, 10));
}

/**
 * The worker's pool, migrated and with the market seeded (first use only). While the first
 * connection fails (the database is down as the worker starts), calls within the backoff share the
 * failure — a connection error, which the host defers without spending attempts — and the first
 * call after it opens a fresh pool and tries again.
 */
export function database(): Promise<Sql> {
  if (shared && (!failed || Date.now() < retryAt)) return shared;
  const attempt = (async () => {
    const sql = connect(databaseUrl(), { max: Number(process.env.ECONOMY_DB_POOL ?? 10), applicationName: "syntropism-economy" });
    try {
      await migrate(sql);
      await seedMarket(sql, economyConfig().market);
      return sql;
    } catch (err) {
      await sql.end({ timeout: 1 }).catch(() => {});
      throw err;
    }
  })();
  shared = attempt;
  failed = false;
  attempt.then(
    () => {
      if (shared === attempt) failures = 0;
    },
    (err) => {
      if (shared !== attempt) return;
      failed = true;
      failures++;
      retryAt = Date.now() + retryDelayMs(failures, err);
    },
  );
  return attempt;
}

/** DATABASE_URL, else the embedded cluster `npm start` runs in .data/pg. */
export function databaseUrl(): string {
  if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
  const running = runningCluster(effectiveDataDir(resolve(DEFAULT_DATA_DIR)));
  if (running) return running.url;
  throw new EconomyError(
    EconomyErrorCode.Config,
    "no database: set DATABASE_URL (postgres://…), or run `npm start`, which starts the embedded PostgreSQL in .data/pg",
  );
}

/** Closes the shared pool (tests, shutdown). */
export async function closeDatabase(): Promise<void> {
  const p = shared;
  shared = undefined;
  failed = false;
  failures = 0;
  const sql = await p?.catch(() => undefined);
  await sql?.end({ timeout: 5 }).catch(() => {});
}

export async function seedMarket(sql: Sql, market: MarketDefaults): Promise<void> {
  for (const r of RESOURCES) {
    const m = market[r];
    await sql`INSERT INTO market_state (resource, supply, price, floor_price, target_utilization)
              VALUES (${r}, ${m.supply}, ${toMicro(m.price).toString()}, ${toMicro(m.floor).toString()}, ${m.target})
              ON CONFLICT (resource) DO NOTHING`;
  }
}

/** The window a moment belongs to. */
export function windowOf(at: number, windowMs: number): number {
  return Math.floor(at / windowMs);
}

/** Who caused what this handler records: the message's id, correlation and trace. */
export function causeOf(ctx: FunctionContext): Cause {
  const sc = ctx.span.spanContext();
  const valid = sc.traceId !== "00000000000000000000000000000000";
  return {
    sourceMsgId: ctx.msgId,
    correlationId: ctx.headers[Header.CorrelationId] || ctx.msgId,
    causationId: ctx.msgId,
    traceId: valid ? sc.traceId : undefined,
    spanId: valid ? sc.spanId : undefined,
    from: ctx.fn,
  };
}

/**
 * Runs `fn`, turning the ledger's refusals (insufficient funds, unknown agent, bad amount) into
 * NonRetriableError with the same code: the command is dead-lettered with the reason, not retried.
 */
export async function asRefusal<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isRefusal(err)) throw new NonRetriableError((err as Error).message, { code: (err as { code: string }).code, cause: err });
    throw err;
  }
}
