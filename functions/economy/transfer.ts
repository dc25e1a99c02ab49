import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { agentId, credits, freeText, LIMITS } from "../../economy/limits.ts";
import { transfer } from "../../economy/ledger.ts";
import { toMicro } from "../../economy/money.ts";

// `nats pub economic.transfer.agent_1 '{"to":"agent_2","amount":25}'` — agent_1 pays agent_2. The
// ledger refuses a transfer from or to a terminated agent (AGENT_TERMINATED).
export default defineFunction({
  description: "Moves credits from the agent in the subject to another agent",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "economic.transfer.*" },
  schema: v.object({ to: agentId, amount: credits, memo: v.optional(freeText(LIMITS.memo)) }),
  resources: { economy },
  handler: (p, ctx) =>
    ctx.resources.economy.command(ctx, async ({ tx, ids, emit, touch, balances }) => {
      const from = ctx.subject.split(".")[2]!;
      touch(from, p.to);
      const r = await transfer(tx, { ...ids, from, to: p.to, amount: toMicro(p.amount), memo: p.memo ? { memo: p.memo } : undefined });
      if (r.duplicate) return;
      const bal = await balances(from, p.to); // locked already by the movement: the balances after it
      emit({ type: "credits_transferred", to: p.to, payload: { from, to: p.to, amount: p.amount, kind: "transfer", from_balance: bal[from]!, to_balance: bal[p.to]! } });
    }),
});
