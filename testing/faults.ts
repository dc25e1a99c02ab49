import { setTimeout as sleep } from "node:timers/promises";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { mint, openAccount } from "../economy/ledger.ts";
import type { Sql } from "../economy/db.ts";
import { runCli, startCli, type CliProcess } from "./cli.ts";
import { waitFor } from "./wait.ts";
import type { TestAuth } from "./nats.ts";

// What the fault tests and the fault benchmarks (bench/faults-pg.ts) share: agents rich enough that
// every bid they send is accepted (so that a bid in the dead-letter stream can only be the host's
// fault), the economy started as a user starts it, a publisher that records which bids the server
// acknowledged, and counts of what reached the ledger, the dead letters and AUDIT. The verdict the
// fault tests reach with them is test/helpers/chaos.ts, assertNothingLost.

/** Opens `n` agents `<prefix><i>` with 10,000,000 credits each (no bid of publishBids can exhaust them). */
export async function seedAgents(sql: Sql, prefix: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  for (const id of ids) {
    await openAccount(sql, id);
    await mint(sql, { sourceMsgId: `${prefix}-genesis-${id}`, to: id, amount: 10_000_000_000_000n, kind: "genesis" });
  }
  return ids;
}

/**
 * The economy's functions as a user runs them: streams applied, `host start --workers N` on the
 * project's functions with 2 s windows, waited for until every worker is ready. `env` is what the
 * host was given (for further CLI calls against the same stack).
 */
export async function startEconomyHost(
  hooks: { after: (fn: () => Promise<void>) => void },
  opts: { natsUrl: string; databaseUrl: string; workers: number; auth?: Pick<TestAuth, "credsFile"> },
): Promise<{ host: CliProcess; env: Record<string, string> }> {
  // on a server with authentication: the CLI as the operator, the workers as the service
  const creds = (role: "admin" | "service"): Record<string, string> => (opts.auth ? { NATS_CREDS: opts.auth.credsFile(role) } : {});
  const env: Record<string, string> = { NATS_URL: opts.natsUrl, DATABASE_URL: opts.databaseUrl, ECONOMY_WINDOW_MS: "2000", LOG_LEVEL: "info", ...creds("admin") };
  const applied = await runCli(["streams", "apply"], env);
  if (applied.code !== 0) throw new Error(`host streams apply exited ${applied.code}:\n${applied.stderr}`);
  const host = startCli(hooks, ["start", "--workers", String(opts.workers)], { ...env, ...creds("service") });
  await host.waitForLog("ready", (l) => l.msg === "all workers ready", 60_000);
  return { host, env };
}

/**
 * A bid no market rule refuses: 1–4 units of cpu or memory (far below supply) at 50 credits a unit
 * (far above any price the markets reach in a test's minutes).
 */
export function acceptableBid(i: number): string {
  return JSON.stringify({ resource: i % 2 ? "cpu" : "memory", quantity: 1 + (i % 4), price: 50 });
}

export type Published = {
  /** msg ids the server acknowledged (stored in the stream). */
  acked: Set<string>;
  /** When each was acknowledged (Date.now()). */
  ackedAt: Map<string, number>;
  /** The stream sequence each was acknowledged with. */
  ackedSeq: Map<string, number>;
  /** Publishes that failed (the server was away); with `retry`, each was tried again until acked. */
  failures: number;
};

/**
 * Publishes `count` bids `market.bid.<agent>` with msg ids `<idPrefix>-<i>`, `window` in flight. With
 * `retry`, a failed publish is repeated (same msg id, so the stream keeps one) until acknowledged;
 * without it, it is counted and skipped — the bid was never acknowledged, so nothing is owed for it.
 */
export async function publishBids(
  js: JetStreamClient,
  opts: { count: number; agents: string[]; idPrefix: string; retry?: boolean; window?: number; onProgress?: (sent: number) => void | Promise<void> },
): Promise<Published> {
  const acked = new Set<string>();
  const ackedAt = new Map<string, number>();
  const ackedSeq = new Map<string, number>();
  let failures = 0;
  const window = opts.window ?? 256;
  const one = async (i: number) => {
    const id = `${opts.idPrefix}-${i}`;
    for (;;) {
      try {
        const ack = await js.publish(`market.bid.${opts.agents[i % opts.agents.length]}`, acceptableBid(i), { msgID: id, timeout: 5000 });
        acked.add(id);
        ackedAt.set(id, Date.now());
        ackedSeq.set(id, ack.seq);
        return;
      } catch {
        failures++;
        if (!opts.retry) return;
        await sleep(100);
      }
    }
  };
  for (let i = 0; i < opts.count; i += window) {
    await Promise.all(Array.from({ length: Math.min(window, opts.count - i) }, (_, k) => one(i + k)));
    await opts.onProgress?.(Math.min(opts.count, i + window));
  }
  return { acked, ackedAt, ackedSeq, failures };
}

export async function bidsRecorded(sql: Sql, idPrefix: string): Promise<number> {
  const [r] = await sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM bids WHERE source_msg_id LIKE ${`${idPrefix}-%`}`;
  return Number(r!.n);
}

/**
 * Milliseconds from `since` (Date.now() when a database came back) until a bid recorded after it
 * is seen committed; polled every `everyMs`, so an upper bound by at most that much.
 */
export async function firstBidCommittedAfter(sql: Sql, since: number, timeoutMs = 120_000, everyMs = 20): Promise<number> {
  const after = new Date(since);
  return waitFor("a bid committed after the database came back", async () => {
    const [r] = await sql<{ any: boolean }[]>`SELECT EXISTS (SELECT 1 FROM bids WHERE created_at > ${after}) AS any`;
    return r?.any ? Date.now() - since : undefined;
  }, timeoutMs, everyMs);
}

/** Messages in DEAD_LETTERS (those whose source msg id starts with `msgIdPrefix`), by reason. */
export async function deadLettersByReason(jsm: JetStreamManager, msgIdPrefix = ""): Promise<Record<string, number>> {
  const info = await jsm.streams.info("DEAD_LETTERS").catch(() => undefined);
  if (!info || info.state.messages === 0) return {};
  const js = jsm.jetstream();
  const c = await js.consumers.get("DEAD_LETTERS");
  const out: Record<string, number> = {};
  const samples: Record<string, string> = {};
  let left = info.state.messages;
  let done = false;
  const it = await c.consume({ max_messages: 1000 });
  for await (const m of it) {
    if (--left === 0) done = true;
    if (!(m.headers?.get("Syntropism-Dlq-Msg-Id") ?? "").startsWith(msgIdPrefix)) {
      if (done) break;
      continue;
    }
    const reason = m.headers?.get("Syntropism-Dlq-Reason") || "(no reason)";
    out[reason] = (out[reason] ?? 0) + 1;
    samples[reason] ??= m.headers?.get("Syntropism-Dlq-Error") ?? "";
    if (done) break;
  }
  await it.close();
  Object.defineProperty(out, "samples", { value: samples, enumerable: false });
  return out;
}

/** One dead letter's error per reason, from deadLettersByReason's result (for failure messages). */
export function samplesOf(byReason: Record<string, number>): Record<string, string> {
  return (byReason as { samples?: Record<string, string> }).samples ?? {};
}

/** AUDIT's events on the given subjects: how many messages, how many distinct event ids. */
export async function auditEvents(jsm: JetStreamManager, subjects: string[]): Promise<{ messages: number; distinct: number }> {
  const js = jsm.jetstream();
  const info = await jsm.streams.info("AUDIT", { subjects_filter: ">" });
  const ids = new Set<string>();
  let messages = 0;
  // one ordered consumer per subject: nats-server 2.9 filters a consumer on one subject only
  for (const subject of subjects) {
    let left = info.state.subjects?.[subject] ?? 0;
    if (left === 0) continue;
    const c = await js.consumers.get("AUDIT", { filter_subjects: subject });
    const it = await c.consume({ max_messages: 1000 });
    for await (const m of it) {
      ids.add(m.json<{ id: string }>().id);
      messages++;
      if (--left === 0) break;
    }
    await it.close();
  }
  return { messages, distinct: ids.size };
}

