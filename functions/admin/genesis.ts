import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { EconomyErrorCode, refuse } from "../../economy/errors.ts";
import { agentId } from "../../economy/limits.ts";
import { mint, openAccount } from "../../economy/ledger.ts";
import { toMicro } from "../../economy/money.ts";
import { DEFAULT_TEMPLATE, templateExists, workspaces } from "../../orchestrator/workspaces.ts";
import { recordWorkspace, templateName } from "../../economy/workspaces.ts";

// Operators create genesis agents, funded from the mint: `nats pub admin.genesis '{"agent_id":"a1","credits":1000}'`.
// Its workspace is made from `template` (a folder of agent/templates; default "default"), recorded
// in the same transaction and created on disk after it (orchestrator/workspaces.ts).
export default defineFunction({
  description: "Creates a genesis agent and mints its initial credits",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "admin.genesis" },
  schema: v.object({ agent_id: agentId, credits: v.pipe(v.number(), v.minValue(0)), template: v.optional(templateName, DEFAULT_TEMPLATE) }),
  resources: { economy, workspaces },
  handler: async (p, ctx) => {
    await ctx.resources.economy.command(ctx, async ({ tx, ids, emit, touch, balances }) => {
      touch(p.agent_id);
      const amount = toMicro(p.credits); // finer than a micro-credit: INVALID_AMOUNT, before anything is written
      const [existing] = await tx<{ source_msg_id: string | null }[]>`SELECT source_msg_id FROM agents WHERE id = ${p.agent_id} FOR UPDATE`;
      if (existing?.source_msg_id === ids.sourceMsgId) return; // redelivery: done already
      if (existing) throw refuse(EconomyErrorCode.AgentExists, `agent ${p.agent_id} already exists`);
      if (!templateExists(p.template)) throw refuse(EconomyErrorCode.UnknownTemplate, `there is no workspace template ${p.template} (agent/templates)`);
      await openAccount(tx, p.agent_id, { sourceMsgId: ids.sourceMsgId });
      await recordWorkspace(tx, p.agent_id, p.template);
      emit({ type: "agent_spawned", to: p.agent_id, payload: { agent_id: p.agent_id, parent_id: null, credits: p.credits } });
      if (amount === 0n) return;
      await mint(tx, { ...ids, to: p.agent_id, amount, kind: "genesis" });
      const bal = await balances(p.agent_id);
      emit({ type: "credits_minted", to: p.agent_id, payload: { agent_id: p.agent_id, amount: p.credits, kind: "genesis", balance: bal[p.agent_id]! } });
    });
    ctx.resources.workspaces.ensure(p.agent_id, p.template);
  },
});
