import * as v from "valibot";
import { defineFunction } from "syntropism";
import { credentials } from "../../auth/resource.ts";

// When an agent is terminated (admin.agent.terminate → agent_terminated on AUDIT), every NATS
// credential it was issued is revoked: the server closes its open connections and refuses it from
// then on (auth/authority.ts). One at a time across all workers (max ack pending 1): each
// revocation extends the account JWT the server holds, so two at once could drop one. Revoking an
// agent revoked already changes nothing, so redeliveries and replays are harmless.
export default defineFunction({
  description: "Revokes a terminated agent's NATS credentials",
  trigger: { type: "jetstream", stream: "AUDIT", subject: "system.agent_terminated" },
  schema: v.object({ type: v.literal("agent_terminated"), payload: v.object({ agent_id: v.string() }) }),
  resources: { credentials },
  concurrency: 1,
  prefetch: 1,
  maxAckPending: 1,
  handler: async (event, ctx) => {
    const revoked = await ctx.resources.credentials.revoke([event.payload.agent_id]);
    if (revoked.length) ctx.log.info({ agent_id: event.payload.agent_id }, "agent's NATS credentials revoked");
    return { agent_id: event.payload.agent_id, revoked: revoked.length > 0, auth: ctx.resources.credentials.authRequired };
  },
});
