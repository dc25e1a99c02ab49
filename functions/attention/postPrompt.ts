import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { flushEvents, recordEvents } from "../../economy/events.ts";
import { inTransaction } from "../../economy/ledger.ts";
import { causeOf, database } from "../../economy/runtime.ts";

// An agent asks a human: `nats pub agent.a1.prompt '{"question":"Which plan is better?"}'`.
export default defineFunction({
  description: "Records an agent's prompt for a human",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "agent.*.prompt" },
  schema: v.object({ question: v.pipe(v.string(), v.minLength(1), v.maxLength(10_000)), context: v.optional(v.record(v.string(), v.unknown())) }),
  handler: async (p, ctx) => {
    const agentId = ctx.subject.split(".")[1]!;
    const sql = await database();
    const cause = causeOf(ctx);
    const promptId = await inTransaction(sql, async (tx) => {
      const [prior] = await tx<{ id: bigint }[]>`SELECT id FROM prompts WHERE source_msg_id = ${cause.sourceMsgId}`;
      if (prior) return String(prior.id);
      const [agent] = await tx`SELECT 1 FROM agents WHERE id = ${agentId}`;
      if (!agent) throw new NonRetriableError(`unknown agent ${agentId}`, { code: "UNKNOWN_AGENT" });
      const [row] = await tx<{ id: bigint }[]>`INSERT INTO prompts (agent_id, question, context, source_msg_id, correlation_id)
        VALUES (${agentId}, ${p.question}, ${tx.json((p.context ?? {}) as never)}, ${cause.sourceMsgId}, ${cause.correlationId}) RETURNING id`;
      await recordEvents(tx, cause, [{ type: "prompt_posted", payload: { prompt_id: String(row!.id), agent_id: agentId, question: p.question } }]);
      return String(row!.id);
    });
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    return { prompt_id: promptId };
  },
});
