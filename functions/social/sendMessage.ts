import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { flushEvents, recordEvents } from "../../economy/events.ts";
import { inTransaction } from "../../economy/ledger.ts";
import { causeOf, database } from "../../economy/runtime.ts";

// `nats pub agent.a1.message '{"to":"a2","body":"hello"}'` — delivered on agent.a2.inbox, audited
// as message_sent.
export default defineFunction({
  description: "Delivers an agent's message to another agent",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "agent.*.message" },
  schema: v.object({ to: v.string(), body: v.pipe(v.string(), v.maxLength(64_000)) }),
  handler: async (p, ctx) => {
    const from = ctx.subject.split(".")[1]!;
    const sql = await database();
    const cause = causeOf(ctx);
    const messageId = await inTransaction(sql, async (tx) => {
      const [prior] = await tx<{ id: bigint }[]>`SELECT id FROM messages WHERE source_msg_id = ${cause.sourceMsgId}`;
      if (prior) return String(prior.id);
      const known = await tx<{ id: string }[]>`SELECT id FROM agents WHERE id IN (${from}, ${p.to})`;
      for (const a of [from, p.to]) if (!known.some((k) => k.id === a)) throw new NonRetriableError(`unknown agent ${a}`, { code: "UNKNOWN_AGENT" });
      const [row] = await tx<{ id: bigint }[]>`INSERT INTO messages (from_agent, to_agent, body, source_msg_id, correlation_id)
        VALUES (${from}, ${p.to}, ${p.body}, ${cause.sourceMsgId}, ${cause.correlationId}) RETURNING id`;
      await recordEvents(tx, cause, [{ type: "message_sent", to: p.to, payload: { message_id: String(row!.id), from, to: p.to, body: p.body } }]);
      return String(row!.id);
    });
    ctx.broadcast(`agent.${p.to}.inbox`, { message_id: messageId, from, body: p.body });
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
  },
});
