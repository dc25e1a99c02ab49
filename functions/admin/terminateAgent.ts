import * as v from "valibot";
import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { EconomyErrorCode, refuse, UnknownAgentError } from "../../economy/errors.ts";
import { agentId, freeText, LIMITS } from "../../economy/limits.ts";
import { agentAccount, lockAccounts } from "../../economy/ledger.ts";
import { toCredits } from "../../economy/money.ts";
import type { Bundle, Resource } from "../../economy/auction.ts";

// Operators terminate an agent (admin.>, never an agent):
// `nats pub admin.agent.terminate '{"agent_id":"a1","reason":"spends on nothing useful"}'`.
// Its status becomes `terminated`; its open bids are released (lost, AGENT_TERMINATED: a
// reservation is no ledger movement, so nothing is refunded and the credits stay where they are);
// from then on its commands (bids, transfers and spawns from it, messages, prompts, MCP requests)
// and credits to it are refused with AGENT_TERMINATED, and its balance stays in its account.
// Terminating it again (another message) is refused with AGENT_TERMINATED; an unknown agent is
// UNKNOWN_AGENT. The fact is agent_terminated on AUDIT (system.agent_terminated), published after
// commit: revoking the agent's NATS credentials reacts to that event, never runs in here.
export default defineFunction({
  description: "Terminates an agent: releases its open bids and refuses its commands from now on",
  trigger: { type: "jetstream", stream: "ECONOMY", subject: "admin.agent.terminate" },
  schema: v.object({ agent_id: agentId, reason: v.pipe(freeText(LIMITS.memo), v.minLength(1)) }),
  resources: { economy },
  handler: (p, ctx) =>
    ctx.resources.economy.command(ctx, async ({ tx, ids, emit, touch }) => {
      touch(p.agent_id);
      // the lock order: the account (2) — every command that checks the status holds it, so none
      // runs between the check and this change — then the agent's open bids (3), then its row
      const held = await lockAccounts(tx, [agentAccount(p.agent_id)]);
      const balance = held.get(agentAccount(p.agent_id));
      if (balance === undefined) throw new UnknownAgentError(p.agent_id);
      const [agent] = await tx<{ status: string; by: string | null }[]>`
        SELECT status, metadata->'terminated'->>'source_msg_id' AS by FROM agents WHERE id = ${p.agent_id}`;
      if (agent!.status === "terminated") {
        if (agent!.by === ids.sourceMsgId) return; // redelivery: done already
        throw refuse(EconomyErrorCode.AgentTerminated, `agent ${p.agent_id} is terminated already`);
      }
      const released = await tx<{ id: bigint; window_id: bigint; resource: Resource | "bundle"; amount: bigint; correlation_id: string | null; components: Bundle | null }[]>`
        UPDATE bids SET status = 'lost', reason = 'AGENT_TERMINATED', settled_at = now()
         WHERE agent_id = ${p.agent_id} AND status = 'open'
        RETURNING id, window_id, resource, amount, correlation_id, components`;
      await tx`UPDATE agents SET status = 'terminated',
                 metadata = metadata || jsonb_build_object('terminated', jsonb_build_object('reason', ${p.reason}::text, 'source_msg_id', ${ids.sourceMsgId}::text, 'at', now()))
               WHERE id = ${p.agent_id}`;
      const amount = released.reduce((s, b) => s + BigInt(b.amount), 0n);
      emit(
        { type: "agent_terminated", to: p.agent_id, payload: { agent_id: p.agent_id, reason: p.reason, balance: toCredits(balance), bids_released: released.length, released: toCredits(amount) } },
        ...released.map((b) => ({
          type: "bid_lost" as const,
          to: p.agent_id,
          correlationId: b.correlation_id,
          payload: { bid_id: String(b.id), agent_id: p.agent_id, window_id: Number(b.window_id), resource: b.resource, reason: "AGENT_TERMINATED", ...(b.components ? { bundle: b.components } : {}) },
        })),
      );
    }),
});
