import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { flushEvents, recordEvents } from "../../economy/events.ts";
import { agentAccount, inTransaction, mint } from "../../economy/ledger.ts";
import { toCredits, toMicro } from "../../economy/money.ts";
import { AGENT_STATE, projectAgents } from "../../economy/projections.ts";
import { asRefusal, causeOf, database } from "../../economy/runtime.ts";

// A human rewards an agent (operators only: admin.>), which mints credits:
// `nats pub admin.reward.grant '{"agent_id":"a1","amount":50,"prompt_id":"3","response":"plan B","reason":"useful"}'`.
export default defineFunction({
  description: "Mints a human's reward to an agent, answering its prompt",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "admin.reward.grant" },
  schema: v.object({
    agent_id: v.string(),
    amount: v.pipe(v.number(), v.gtValue(0)),
    reason: v.optional(v.string(), ""),
    prompt_id: v.optional(v.string()),
    response: v.optional(v.string()),
    responder: v.optional(v.string(), "human"),
  }),
  handler: async (p, ctx) => {
    const sql = await database();
    const cause = causeOf(ctx);
    await asRefusal(() =>
      inTransaction(sql, async (tx) => {
        const receipt = await mint(tx, { sourceMsgId: cause.sourceMsgId, to: p.agent_id, amount: toMicro(p.amount), kind: "reward", correlationId: cause.correlationId, causationId: cause.causationId, memo: { reason: p.reason } });
        if (receipt.duplicate) return;
        if (p.prompt_id !== undefined) {
          const [prompt] = await tx<{ agent_id: string; status: string }[]>`SELECT agent_id, status FROM prompts WHERE id = ${p.prompt_id} FOR UPDATE`;
          if (!prompt || prompt.agent_id !== p.agent_id) throw new NonRetriableError(`prompt ${p.prompt_id} is not agent ${p.agent_id}'s`, { code: "UNKNOWN_PROMPT" });
          if (prompt.status !== "open") throw new NonRetriableError(`prompt ${p.prompt_id} is ${prompt.status}`, { code: "PROMPT_CLOSED" });
          await tx`UPDATE prompts SET status = 'answered', answered_at = now() WHERE id = ${p.prompt_id}`;
          await tx`INSERT INTO responses (prompt_id, responder, body, reward, reward_tx_id, source_msg_id)
                   VALUES (${p.prompt_id}, ${p.responder}, ${p.response ?? ""}, ${toMicro(p.amount).toString()}, ${receipt.txId.toString()}, ${cause.sourceMsgId})`;
        }
        const [a] = await tx<{ balance: bigint }[]>`SELECT balance FROM accounts WHERE id = ${agentAccount(p.agent_id)}`;
        const bal = toCredits(a!.balance);
        await recordEvents(tx, cause, [
          { type: "reward_granted", to: p.agent_id, payload: { agent_id: p.agent_id, amount: p.amount, prompt_id: p.prompt_id ?? null, reason: p.reason, balance: bal } },
          { type: "credits_minted", to: p.agent_id, payload: { agent_id: p.agent_id, amount: p.amount, kind: "reward", balance: bal } },
        ]);
      }),
    );
    await flushEvents(ctx.js, sql, cause.sourceMsgId);
    await projectAgents(await ctx.kv(AGENT_STATE), sql, [p.agent_id]);
  },
});
