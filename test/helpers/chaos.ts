import assert from "node:assert/strict";
import type { JetStreamManager } from "@nats-io/jetstream";
import { checkLedger } from "../../economy/ledger.ts";
import type { Sql } from "../../economy/db.ts";
import { waitFor } from "../../testing/wait.ts";
import { auditEvents, deadLettersByReason, samplesOf } from "../../testing/faults.ts";

// The fault tests' kit (testing/faults.ts, shared with bench/) and the one verdict every fault test
// reaches: each acknowledged bid in the ledger exactly once, nothing dead-lettered, the ledger
// balanced, each committed event on AUDIT exactly once.

export * from "../../testing/faults.ts";

/**
 * The verdict after a fault: every acknowledged bid decided and in the ledger exactly once, none
 * dead-lettered, no bid left open once its windows cleared, the ledger balanced, and each bid's
 * event on AUDIT exactly once.
 */
export async function assertNothingLost(
  sql: Sql,
  jsm: JetStreamManager,
  run: { idPrefix: string; acked: Set<string>; serverLost?: Set<string> },
  timeoutMs = 120_000,
): Promise<number> {
  // serverLost: bids nats-server itself may have lost (acknowledged, then gone in a kill -9); they
  // are not owed, and how many of them are indeed missing is returned
  const owed = [...run.acked].filter((id) => !run.serverLost?.has(id));
  const recordedOf = async (ids: string[]) => Number((await sql<{ n: bigint }[]>`SELECT count(DISTINCT source_msg_id)::bigint AS n FROM bids WHERE source_msg_id = ANY(${ids}::text[])`)[0]!.n);
  await waitFor("every acknowledged bid recorded", async () => ((await recordedOf(owed)) >= owed.length ? true : undefined), timeoutMs, 200).catch(() => {});
  const rows = await sql<{ source_msg_id: string; n: bigint; status: string }[]>`
    SELECT source_msg_id, count(*)::bigint AS n, min(status) AS status FROM bids WHERE source_msg_id LIKE ${`${run.idPrefix}-%`} GROUP BY source_msg_id`;
  const recorded = new Map(rows.map((r) => [r.source_msg_id, r]));
  const missing = [...run.acked].filter((id) => !recorded.has(id) && !run.serverLost?.has(id));
  const lostByServer = [...(run.serverLost ?? [])].filter((id) => !recorded.has(id)).length;
  if (missing.length) {
    // what became of them: dead-lettered (and why), or still waiting in the stream
    const dead = await deadLettersByReason(jsm, `${run.idPrefix}-`);
    const streams = await Promise.all((await jsm.streams.list().next()).map(async (si) => `${si.config.name}: ${si.state.messages}`));
    assert.deepEqual(missing.slice(0, 10), [], `${missing.length} acknowledged bids are not in the ledger; dead letters ${JSON.stringify(dead)} ${JSON.stringify(samplesOf(dead))}; streams ${streams.join(", ")}`);
  }
  const twice = rows.filter((r) => Number(r.n) !== 1);
  assert.deepEqual(twice.slice(0, 10), [], "a bid is recorded twice");
  const refused = rows.filter((r) => r.status === "rejected");
  assert.equal(refused.length, 0, `${refused.length} bids refused: the fault test's bids must all be acceptable`);

  const dead = await deadLettersByReason(jsm, `${run.idPrefix}-`);
  assert.deepEqual(dead, {}, `no bid is dead-lettered; errors: ${JSON.stringify(samplesOf(dead))}`);
  await waitFor("every bid's window cleared", async () => {
    const [r] = await sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM bids WHERE status = 'open' AND source_msg_id LIKE ${`${run.idPrefix}-%`}`;
    return Number(r!.n) === 0 || undefined;
  }, 60_000, 250);
  const check = await checkLedger(sql);
  assert.equal(check.ok, true, JSON.stringify(check, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));

  const bids = await waitFor("every bid's event on AUDIT", async () => {
    const a = await auditEvents(jsm, ["market.bid_placed", "market.bid_rejected"]);
    return a.messages >= rows.length ? a : undefined;
  }, 60_000, 500);
  assert.equal(bids.distinct, rows.length, "a committed bid's event is missing from AUDIT");
  assert.equal(bids.messages, bids.distinct, "an event id appears twice on AUDIT");
  return lostByServer;
}
