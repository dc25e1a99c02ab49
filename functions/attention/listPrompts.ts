import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { agentId } from "../../economy/limits.ts";

// `nats req admin.prompts.open '{}'` — the prompts waiting for a human, oldest first:
// {"prompts":[{"prompt_id":"3","agent_id":"a1","question":"…","context":{…},"created_at":"…"}]}.
// `{"agent_id":"a1"}` lists one agent's; `limit` (default 100, at most 1000) caps the list.
export default defineFunction({
  description: "Lists open prompts for humans (oldest first)",
  trigger: { type: "request", subject: "admin.prompts.open" },
  schema: v.optional(v.object({ agent_id: v.optional(agentId), limit: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1000)), 100) }), {}),
  resources: { economy },
  handler: async (p, ctx) => {
    const sql = await ctx.resources.economy.database();
    const limit = p.limit ?? 100;
    const rows = await sql<{ id: bigint; agent_id: string; question: string; context: unknown; created_at: Date }[]>`
      SELECT id, agent_id, question, context, created_at FROM prompts
       WHERE status = 'open' ${p.agent_id ? sql`AND agent_id = ${p.agent_id}` : sql``}
       ORDER BY id LIMIT ${limit}`;
    return { prompts: rows.map((r) => ({ prompt_id: String(r.id), agent_id: r.agent_id, question: r.question, context: r.context, created_at: r.created_at.toISOString() })) };
  },
});
