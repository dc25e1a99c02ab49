import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { EconomyErrorCode, refuse } from "../../economy/errors.ts";
import { agentId, credits, freeText, LIMITS } from "../../economy/limits.ts";
import { mint } from "../../economy/ledger.ts";
import { toMicro } from "../../economy/money.ts";

// A human rewards an agent (operators only: admin.>), which mints credits:
// `nats pub admin.reward.grant '{"agent_id":"a1","amount":50,"prompt_id":"3","response":"plan B","reason":"useful"}'`.
// A terminated agent is rewarded nothing (the ledger refuses the mint: AGENT_TERMINATED).
export default defineFunction({
  description: "Mints a human's reward to an agent, answering its prompt",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "admin.reward.grant" },
  schema: v.object({
    agent_id: agentId,
    amount: credits,
    reason: v.optional(freeText(LIMITS.memo), ""),
    prompt_id: v.optional(freeText(LIMITS.name)),
    response: v.optional(freeText(LIMITS.text)),
    responder: v.optional(freeText(LIMITS.name), "human"),
  }),
  resources: { economy },
  handler: (p, ctx) =>
    ctx.resources.economy.command(ctx, async ({ tx, ids, emit, touch, balances }) => {
      touch(p.agent_id);
      const receipt = await mint(tx, { ...ids, to: p.agent_id, amount: toMicro(p.amount), kind: "reward", memo: { reason: p.reason } });
      if (receipt.duplicate) return;
      if (p.prompt_id !== undefined) {
        const [prompt] = /^\d{1,18}$/.test(p.prompt_id) ? await tx<{ agent_id: string; status: string }[]>`SELECT agent_id, status FROM prompts WHERE id = ${p.prompt_id} FOR UPDATE` : [];
        if (!prompt || prompt.agent_id !== p.agent_id) throw refuse(EconomyErrorCode.UnknownPrompt, `prompt ${p.prompt_id} is not agent ${p.agent_id}'s`);
        if (prompt.status !== "open") throw refuse(EconomyErrorCode.PromptClosed, `prompt ${p.prompt_id} is ${prompt.status}`);
        await tx`UPDATE prompts SET status = 'answered', answered_at = now() WHERE id = ${p.prompt_id}`;
        await tx`INSERT INTO responses (prompt_id, responder, body, reward, reward_tx_id, source_msg_id)
                 VALUES (${p.prompt_id}, ${p.responder}, ${p.response ?? ""}, ${toMicro(p.amount).toString()}, ${receipt.txId.toString()}, ${ids.sourceMsgId})`;
      }
      const balance = (await balances(p.agent_id))[p.agent_id]!;
      emit(
        { type: "reward_granted", to: p.agent_id, payload: { agent_id: p.agent_id, amount: p.amount, prompt_id: p.prompt_id ?? null, reason: p.reason, balance } },
        { type: "credits_minted", to: p.agent_id, payload: { agent_id: p.agent_id, amount: p.amount, kind: "reward", balance } },
      );
    }),
});
