import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { EconomyErrorCode, refuse } from "../../economy/errors.ts";
import { agentId, credits } from "../../economy/limits.ts";
import { openAccount, transfer } from "../../economy/ledger.ts";
import { toMicro } from "../../economy/money.ts";
import { DEFAULT_TEMPLATE, templateExists, workspaces } from "../../orchestrator/workspaces.ts";
import { recordWorkspace, templateName, workspaceTemplate } from "../../economy/workspaces.ts";

// `nats pub economic.spawn.agent_1 '{"child_id":"agent_1a","credits":100}'` — the parent creates a
// child and funds it from its own balance; the lineage is kept. The child's workspace starts from
// its parent's template, or from `template` when the spawn names one. A terminated parent spawns nothing
// (the ledger refuses its funding: AGENT_TERMINATED).
export default defineFunction({
  description: "Spawns a child agent funded by its parent",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "economic.spawn.*" },
  schema: v.object({ child_id: agentId, credits, template: v.optional(templateName) }),
  resources: { economy, workspaces },
  handler: async (p, ctx) => {
    let template = p.template ?? DEFAULT_TEMPLATE;
    await ctx.resources.economy.command(ctx, async ({ tx, ids, emit, touch, balances }) => {
      const parent = ctx.subject.split(".")[2]!;
      touch(parent, p.child_id);
      const [existing] = await tx<{ source_msg_id: string | null }[]>`SELECT source_msg_id FROM agents WHERE id = ${p.child_id} FOR UPDATE`;
      if (existing?.source_msg_id === ids.sourceMsgId) return;
      if (existing) throw refuse(EconomyErrorCode.AgentExists, `agent ${p.child_id} already exists`);
      template = p.template ?? (await workspaceTemplate(tx, parent));
      if (!templateExists(template)) throw refuse(EconomyErrorCode.UnknownTemplate, `there is no workspace template ${template} (agent/templates)`);
      await openAccount(tx, p.child_id, { parentId: parent, sourceMsgId: ids.sourceMsgId });
      await recordWorkspace(tx, p.child_id, template);
      await transfer(tx, { ...ids, from: parent, to: p.child_id, amount: toMicro(p.credits), kind: "spawn" });
      const bal = await balances(parent, p.child_id); // locked already by the movement: the balances after it
      emit(
        { type: "agent_spawned", to: p.child_id, payload: { agent_id: p.child_id, parent_id: parent, credits: p.credits } },
        { type: "credits_transferred", to: p.child_id, payload: { from: parent, to: p.child_id, amount: p.credits, kind: "spawn", from_balance: bal[parent]!, to_balance: bal[p.child_id]! } },
      );
    });
    ctx.resources.workspaces.ensure(p.child_id, template);
  },
});
