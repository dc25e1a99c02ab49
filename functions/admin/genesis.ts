import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { flushEvents, recordEvents } from "../../economy/events.ts";
import { agentAccount, inTransaction, mint, openAccount } from "../../economy/ledger.ts";
import { toCredits, toMicro } from "../../economy/money.ts";
import { AGENT_STATE, projectAgents } from "../../economy/projections.ts";
import { causeOf, database } from "../../economy/runtime.ts";

// Operators create genesis agents, funded from the mint: `nats pub admin.genesis '{"agent_id":"a1","credits":1000}'`.
export default defineFunction({
  description: "Creates a genesis agent and mints its initial credits",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "admin.genesis" },
  schema: v.object({ agent_id: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/)), credits: v.pipe(v.number(), v.minValue(0)) }),
  handler: async (p, ctx) => {
    const sql = await database();
    const cause = causeOf(ctx);
    await inTransaction(sql, async (tx) => {
      const [existing] = await tx<{ source_msg_id: string | null }[]>`SELECT source_msg_id FROM agents WHERE id = ${p.agent_id} FOR UPDATE`;
      if (existing && existing.source_msg_id === cause.sourceMsgId) return; // redelivery: done already
      if (existing) throw new NonRetriableError(`agent ${p.agent_id} already exists`, { code: "AGENT_EXISTS" });
      await openAccount(tx, p.agent_id, { sourceMsgId: cause.sourceMsgId });
      const events = [{ type: "agent_spawned" as const, to: p.agent_id, payload: { agent_id: p.agent_id, parent_id: null, credits: p.credits } }];
      if (p.credits > 0) {
        await mint(tx, { sourceMsgId: cause.sourceMsgId, to: p.agent_id, amount: toMicro(p.credits), kind: "genesis", correlationId: cause.correlationId, causationId: cause.causationId });
        const [a] = await tx<{ balance: bigint }[]>`SELECT balance FROM accounts WHERE id = ${agentAccount(p.agent_id)}`;
        await recordEvents(tx, cause, [...events, { type: "credits_minted", to: p.agent_id, payload: { agent_id: p.agent_id, amount: p.credits, kind: "genesis", balance: toCredits(a!.balance) } }]);
      } else await recordEvents(tx, cause, events);
    });
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    await projectAgents(await ctx.kv(AGENT_STATE), sql, [p.agent_id]);
  },
});
