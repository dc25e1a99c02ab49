import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { balance } from "../../economy/ledger.ts";
import { toCredits } from "../../economy/money.ts";
import { database } from "../../economy/runtime.ts";

// `nats req economic.balance.agent_1 ''` → {"agent_id":"agent_1","balance":1000,...}
export default defineFunction({
  description: "An agent's balance, reserved credits and what it may spend (credits)",
  trigger: { type: "request", subject: "economic.balance.*" },
  schema: v.optional(v.unknown()),
  handler: async (_p, ctx) => {
    const agentId = ctx.subject.split(".")[2]!;
    const sql = await database();
    try {
      const b = await balance(sql, agentId);
      return { agent_id: agentId, balance: toCredits(b.balance), reserved: toCredits(b.reserved), available: toCredits(b.available) };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "UNKNOWN_AGENT" || code === "INVALID_ARGUMENT") throw new NonRetriableError(`unknown agent ${agentId}`, { code: "UNKNOWN_AGENT" });
      throw err;
    }
  },
});
