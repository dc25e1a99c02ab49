import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { EconomyErrorCode, refuse } from "../../economy/errors.ts";
import { boundedJson, freeText, LIMITS } from "../../economy/limits.ts";

// An agent asks a human: `nats pub agent.a1.prompt '{"question":"Which plan is better?","context":{"plans":["A","B"]}}'`.
// `context` is any JSON object (≤ 16 KiB) shown to the human beside the question. Open prompts:
// `nats req admin.prompts.open ''` (functions/attention/listPrompts.ts). A terminated agent's prompt
// is refused (AGENT_TERMINATED).
export default defineFunction({
  description: "Records an agent's prompt for a human",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "agent.*.prompt" },
  schema: v.object({ question: v.pipe(freeText(LIMITS.text), v.minLength(1)), context: v.optional(boundedJson(LIMITS.contextBytes)) }),
  resources: { economy },
  handler: (p, ctx) =>
    ctx.resources.economy.command(ctx, async ({ tx, cause, emit }) => {
      const agentId = ctx.subject.split(".")[1]!;
      const [prior] = await tx<{ id: bigint }[]>`SELECT id FROM prompts WHERE source_msg_id = ${cause.sourceMsgId}`;
      if (prior) return { prompt_id: String(prior.id) };
      // FOR SHARE: a termination waits for this prompt, or this one sees it
      const [agent] = await tx<{ status: string }[]>`SELECT status FROM agents WHERE id = ${agentId} FOR SHARE`;
      if (!agent) throw refuse(EconomyErrorCode.UnknownAgent, `unknown agent ${agentId}`);
      if (agent.status === "terminated") throw refuse(EconomyErrorCode.AgentTerminated, `agent ${agentId} is terminated: it posts no prompts`);
      const [row] = await tx<{ id: bigint }[]>`INSERT INTO prompts (agent_id, question, context, source_msg_id, correlation_id)
        VALUES (${agentId}, ${p.question}, ${tx.json((p.context ?? {}) as never)}, ${cause.sourceMsgId}, ${cause.correlationId}) RETURNING id`;
      emit({ type: "prompt_posted", payload: { prompt_id: String(row!.id), agent_id: agentId, question: p.question } });
      return { prompt_id: String(row!.id) };
    }),
});
