import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { flushEvents, recordEvents } from "../../economy/events.ts";
import { agentAccount, inTransaction, lockAccounts, openAccount, transfer } from "../../economy/ledger.ts";
import { toCredits, toMicro } from "../../economy/money.ts";
import { AGENT_STATE, projectAgents } from "../../economy/projections.ts";
import { asRefusal, causeOf, database } from "../../economy/runtime.ts";

// `nats pub economic.spawn.agent_1 '{"child_id":"agent_1a","credits":100}'` — the parent creates a
// child and funds it from its own balance; the lineage is kept.
export default defineFunction({
  description: "Spawns a child agent funded by its parent",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "economic.spawn.*" },
  schema: v.object({ child_id: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/)), credits: v.pipe(v.number(), v.gtValue(0)) }),
  handler: async (p, ctx) => {
    const parent = ctx.subject.split(".")[2]!;
    const sql = await database();
    const cause = causeOf(ctx);
    await asRefusal(() =>
      inTransaction(sql, async (tx) => {
        const [existing] = await tx<{ source_msg_id: string | null }[]>`SELECT source_msg_id FROM agents WHERE id = ${p.child_id} FOR UPDATE`;
        if (existing && existing.source_msg_id === cause.sourceMsgId) return;
        if (existing) throw new NonRetriableError(`agent ${p.child_id} already exists`, { code: "AGENT_EXISTS" });
        await openAccount(tx, p.child_id, { parentId: parent, sourceMsgId: cause.sourceMsgId });
        await transfer(tx, { sourceMsgId: cause.sourceMsgId, from: parent, to: p.child_id, amount: toMicro(p.credits), kind: "spawn", correlationId: cause.correlationId, causationId: cause.causationId });
        // already locked by the movement in this transaction: a read of the balances after it
        const bal = await lockAccounts(tx, [agentAccount(parent), agentAccount(p.child_id)]);
        const of = (a: string) => toCredits(bal.get(agentAccount(a))!);
        await recordEvents(tx, cause, [
          { type: "agent_spawned", to: p.child_id, payload: { agent_id: p.child_id, parent_id: parent, credits: p.credits } },
          { type: "credits_transferred", to: p.child_id, payload: { from: parent, to: p.child_id, amount: p.credits, kind: "spawn", from_balance: of(parent), to_balance: of(p.child_id) } },
        ]);
      }),
    );
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    await projectAgents(await ctx.kv(AGENT_STATE), sql, [parent, p.child_id]);
  },
});
