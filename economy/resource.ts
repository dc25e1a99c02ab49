import type { KV } from "@nats-io/kv";
import { defineResource, NonRetriableError, type FunctionContext, type Logger } from "syntropism";
import { settingsOf, type Settings } from "../config/settings.ts";
import { connect, DEFAULT_DATA_DIR, migrate, type Sql, type TransactionSql } from "./db.ts";
import { Coalescer } from "./coalesce.ts";
import { effectiveDataDir, runningCluster } from "./embeddedPostgres.ts";
import { EconomyError, EconomyErrorCode, isConnectionError, isRefusal } from "./errors.ts";
import { contextPublisher, flushEvents, markPublished, recordEvents, type Cause, type EventInput, type Recorded } from "./events.ts";
import { agentAccount, inTransaction, lockAccounts } from "./ledger.ts";
import { toCredits } from "./money.ts";
import { AGENT_STATE, projectAgents } from "./projections.ts";
import { causeOf, seedMarket } from "./runtime.ts";
import { resolve } from "node:path";

// The economy as a host resource: one per host, set up when the first economy function starts and
// released when the host stops. It owns the database pool (migrated and the market seeded on first
// use), the agents' read-model projector, and the command pattern every economy function follows:
//
//   handler: (p, ctx) => ctx.resources.economy.command(ctx, async ({ tx, emit, touch }) => { … })
//
// One transaction (rerun on serialization failures and deadlocks) in which the body changes the
// ledger and states its events; the events go to the outbox in the same transaction; after commit
// they are published through `ctx.publish` — the host's publish path, so backpressure, the typed
// full-stream deferral, trace context and causation headers apply — with msg id = event id, and the
// agents the body touched have their read models (KV agent_state) rewritten. A refusal the body or
// the ledger raises (EconomyError: INSUFFICIENT_FUNDS, UNKNOWN_AGENT, …) becomes a NonRetriableError
// with the same code: the command is dead-lettered with that reason. Docs: docs/economy.md,
// "Writing an economy function".

export type EconomySettings = Settings["economy"];

/** What a command's body gets. */
export type Command = {
  tx: TransactionSql;
  /** The handled message as cause: msg id, correlation, trace; events derive their ids from it. */
  cause: Cause;
  /** States events: recorded in this transaction, published after commit. */
  emit(...events: EventInput[]): void;
  /** Agents whose read model is rewritten after commit. */
  touch(...agentIds: string[]): void;
  /** The cause's ids as the ledger's operations take them: `transfer(tx, { ...ids, from, to, amount })`. */
  ids: { sourceMsgId: string; correlationId: string; causationId: string };
  /** Locks the agents' accounts (the lock order) and returns their balances in credits; unknown agents are absent. */
  balances(...agentIds: string[]): Promise<Record<string, number>>;
};

export type CommandOptions = {
  /** Overrides of the cause, e.g. an idempotency key other than the msg id (`sourceMsgId`). */
  cause?: Partial<Cause>;
};

/** The first failed connections back off: short while the server is only down, long otherwise. */
function retryDelayMs(n: number, err: unknown): number {
  // a lost server comes back by itself: try again within a second of it; anything else (a
  // refused password, a migration that does not apply) needs a person, so do not hammer it
  const cap = isConnectionError(err) ? 1000 : 30_000;
  return Math.min(cap, 100 * 2 ** Math.min(n - 1, 10));
}

export class Economy {
  readonly settings: EconomySettings;
  readonly #kv: (bucket: string) => Promise<KV>;
  #pool?: Promise<Sql>;
  #failed = false;
  #failures = 0;
  #retryAt = 0;
  #closed = false;
  /**
   * Agents whose read model to rewrite, coalesced across commands (bids): one query and one put per
   * agent per ~20 ms. The state written is read after the last commit that added the agent, so KV
   * never shows an older state than that commit.
   */
  readonly projector: Coalescer<string>;
  /** Events published from memory, marked in the outbox in batches (one UPDATE per ~20 ms). */
  readonly #published: Coalescer<string>;

  constructor(settings: EconomySettings, deps: { kv: (bucket: string) => Promise<KV>; log: Logger }) {
    this.settings = settings;
    this.#kv = deps.kv;
    this.projector = new Coalescer(async (ids) => projectAgents(await this.#kv(AGENT_STATE), await this.database(), ids));
    this.#published = new Coalescer(async (ids) => markPublished(await this.database(), ids), {
      onError: (err) => deps.log.debug({ err }, "marking published events failed; the relay will publish them again"),
    });
  }

  /** DATABASE_URL's server, else the embedded cluster `npm start` runs in .data/pg. */
  databaseUrl(): string {
    if (this.settings.databaseUrl) return this.settings.databaseUrl;
    const running = runningCluster(effectiveDataDir(resolve(DEFAULT_DATA_DIR)));
    if (running) return running.url;
    throw new EconomyError(EconomyErrorCode.Config, "no database: set DATABASE_URL (postgres://…), or run `npm start`, which starts the embedded PostgreSQL in .data/pg");
  }

  /**
   * The pool, migrated and with the market seeded (first use only). While the first connection
   * fails (the database is down as the worker starts), calls within the backoff share the failure
   * — a connection error, which the host defers without spending attempts — and the first call
   * after it opens a fresh pool and tries again.
   */
  database(): Promise<Sql> {
    if (this.#closed) return Promise.reject(new EconomyError(EconomyErrorCode.Config, "the economy resource was released (the host stopped)"));
    if (this.#pool && (!this.#failed || Date.now() < this.#retryAt)) return this.#pool;
    const attempt = (async () => {
      const sql = connect(this.databaseUrl(), { max: this.settings.dbPool, applicationName: "syntropism-economy" });
      try {
        await migrate(sql);
        await seedMarket(sql, this.settings.market);
        return sql;
      } catch (err) {
        await sql.end({ timeout: 1 }).catch(() => {});
        throw err;
      }
    })();
    this.#pool = attempt;
    this.#failed = false;
    attempt.then(
      () => {
        if (this.#pool === attempt) this.#failures = 0;
      },
      (err) => {
        if (this.#pool !== attempt) return;
        this.#failed = true;
        this.#failures++;
        this.#retryAt = Date.now() + retryDelayMs(this.#failures, err);
      },
    );
    return attempt;
  }

  /**
   * Runs one command: `body` in a transaction, its events recorded there and published after
   * commit, its agents' read models rewritten. A redelivered command whose body finds its work
   * done (the ledger's idempotency) still publishes what its first run left unpublished.
   */
  async command<T>(ctx: FunctionContext<any>, body: (c: Command) => Promise<T>, options: CommandOptions = {}): Promise<T> {
    const cause: Cause = { ...causeOf(ctx), ...options.cause };
    const sql = await this.database();
    let touched: string[] = [];
    const result = await asRefusal(() =>
      inTransaction(sql, async (tx) => {
        const events: EventInput[] = [];
        const agents = new Set<string>();
        const out = await body({
          tx,
          cause,
          emit: (...e) => void events.push(...e),
          touch: (...a) => a.forEach((x) => agents.add(x)),
          ids: { sourceMsgId: cause.sourceMsgId, correlationId: cause.correlationId, causationId: cause.causationId },
          balances: async (...ids) => {
            const locked = await lockAccounts(tx, ids.map(agentAccount));
            return Object.fromEntries(ids.filter((a) => locked.has(agentAccount(a))).map((a) => [a, toCredits(locked.get(agentAccount(a))!)]));
          },
        });
        if (events.length) await recordEvents(tx, cause, events);
        touched = [...agents]; // the committed attempt's
        return out;
      }),
    );
    await this.publishPending(ctx, cause.sourceMsgId);
    if (touched.length) await projectAgents(await this.#kv(AGENT_STATE), sql, touched);
    return result;
  }

  /** Publishes the unpublished events of these commands (outbox order) through ctx.publish, and marks them. */
  async publishPending(ctx: FunctionContext<any>, sourceMsgIds: string | string[]): Promise<number> {
    return flushEvents(contextPublisher(ctx), await this.database(), sourceMsgIds);
  }

  /**
   * Publishes events just committed (from memory) through ctx.publish; they are marked published
   * in batches shortly after (a crash before that leaves them to the relay, which publishes them
   * again under the same msg ids: the stream and readers drop the repeat).
   */
  async publishRecorded(ctx: FunctionContext<any>, recorded: Recorded[]): Promise<void> {
    if (!recorded.length) return;
    const publish = contextPublisher(ctx);
    await Promise.all(recorded.map((r) => publish(r.subject, r.envelope, r.id)));
    this.#published.add(recorded.map((r) => r.id));
  }

  /** Flushes the projector and the marker and closes the pool. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.projector.flush().catch(() => {});
    await this.#published.flush().catch(() => {});
    this.#closed = true;
    const p = this.#pool;
    this.#pool = undefined;
    const sql = await p?.catch(() => undefined);
    await sql?.end({ timeout: 5 }).catch(() => {});
  }
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

/** The economy: named by every economy function in `resources`. */
export const economy = defineResource({
  name: "economy",
  setup: (ctx) => new Economy(settingsOf(ctx.settings).economy, { kv: ctx.kv, log: ctx.log }),
  release: (e) => e.close(),
});
