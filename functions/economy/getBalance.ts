import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { agentBalance } from "../../economy/ledger.ts";
import { toCredits } from "../../economy/money.ts";

// `nats req economic.balance.agent_1 ''` → {"agent_id":"agent_1","balance":1000,...}
export default defineFunction({
  description: "An agent's balance, reserved credits and what it may spend (credits)",
  trigger: { type: "request", subject: "economic.balance.*" },
  schema: v.optional(v.unknown()),
  resources: { economy },
  handler: async (_p, ctx) => {
    const agentId = ctx.subject.split(".")[2]!;
    const b = await agentBalance(await ctx.resources.economy.database(), agentId);
    return { agent_id: agentId, balance: toCredits(b.balance), reserved: toCredits(b.reserved), available: toCredits(b.available) };
  },
});
