import * as v from "valibot";
import { defineFunction } from "syntropism";
import { flushEvents, recordEvents } from "../../economy/events.ts";
import { agentAccount, inTransaction, lockAccounts, transfer } from "../../economy/ledger.ts";
import { toCredits, toMicro } from "../../economy/money.ts";
import { AGENT_STATE, projectAgents } from "../../economy/projections.ts";
import { asRefusal, causeOf, database } from "../../economy/runtime.ts";

// `nats pub economic.transfer.agent_1 '{"to":"agent_2","amount":25}'` — agent_1 pays agent_2.
export default defineFunction({
  description: "Moves credits from the agent in the subject to another agent",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "economic.transfer.*" },
  schema: v.object({ to: v.string(), amount: v.pipe(v.number(), v.gtValue(0)), memo: v.optional(v.string()) }),
  handler: async (p, ctx) => {
    const from = ctx.subject.split(".")[2]!;
    const sql = await database();
    const cause = causeOf(ctx);
    await asRefusal(() =>
      inTransaction(sql, async (tx) => {
        const r = await transfer(tx, { sourceMsgId: cause.sourceMsgId, from, to: p.to, amount: toMicro(p.amount), correlationId: cause.correlationId, causationId: cause.causationId, memo: p.memo ? { memo: p.memo } : undefined });
        if (r.duplicate) return;
        // already locked by the movement in this transaction: a read of the balances after it
        const bal = await lockAccounts(tx, [agentAccount(from), agentAccount(p.to)]);
        const of = (a: string) => toCredits(bal.get(agentAccount(a))!);
        await recordEvents(tx, cause, [{ type: "credits_transferred", to: p.to, payload: { from, to: p.to, amount: p.amount, kind: "transfer", from_balance: of(from), to_balance: of(p.to) } }]);
      }),
    );
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    await projectAgents(await ctx.kv(AGENT_STATE), sql, [from, p.to]);
  },
});
