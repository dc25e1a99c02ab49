import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { EconomyErrorCode, refuse } from "../../economy/errors.ts";
import { agentId, freeText, LIMITS } from "../../economy/limits.ts";

// `nats pub agent.a1.message '{"to":"a2","body":"hello"}'` — delivered on agent.a2.inbox, audited
// as message_sent. A terminated sender or recipient is refused (AGENT_TERMINATED).
export default defineFunction({
  description: "Delivers an agent's message to another agent",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "agent.*.message" },
  schema: v.object({ to: agentId, body: freeText(LIMITS.text) }),
  resources: { economy },
  handler: async (p, ctx) => {
    const from = ctx.subject.split(".")[1]!;
    const messageId = await ctx.resources.economy.command(ctx, async ({ tx, cause, emit }) => {
      const [prior] = await tx<{ id: bigint }[]>`SELECT id FROM messages WHERE source_msg_id = ${cause.sourceMsgId}`;
      if (prior) return String(prior.id);
      // FOR SHARE: a termination of either waits for this message, or this one sees it
      const known = await tx<{ id: string; status: string }[]>`SELECT id, status FROM agents WHERE id IN (${from}, ${p.to}) FOR SHARE`;
      for (const a of [from, p.to]) {
        const k = known.find((x) => x.id === a);
        if (!k) throw refuse(EconomyErrorCode.UnknownAgent, `unknown agent ${a}`);
        if (k.status === "terminated") throw refuse(EconomyErrorCode.AgentTerminated, `agent ${a} is terminated: ${a === from ? "it sends" : "it receives"} no messages`);
      }
      const [row] = await tx<{ id: bigint }[]>`INSERT INTO messages (from_agent, to_agent, body, source_msg_id, correlation_id)
        VALUES (${from}, ${p.to}, ${p.body}, ${cause.sourceMsgId}, ${cause.correlationId}) RETURNING id`;
      emit({ type: "message_sent", to: p.to, payload: { message_id: String(row!.id), from, to: p.to, body: p.body } });
      return String(row!.id);
    });
    ctx.broadcast(`agent.${p.to}.inbox`, { message_id: messageId, from, body: p.body });
  },
});
