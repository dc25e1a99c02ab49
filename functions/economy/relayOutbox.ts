import { defineFunction } from "syntropism";
import { economy } from "../../economy/resource.ts";
import { contextPublisher, relayOutbox, RELAY_EVERY_MS } from "../../economy/events.ts";

// The outbox relay: every 500 ms, in every worker (one at a time across them), events that have
// stayed unpublished for a second or more are published to AUDIT in outbox order, msg id = event id.
// The message that recorded them normally published them already (the fast path); this one does
// not depend on that message: a worker killed after commit, or a publish that failed and was never
// redelivered, still gets its events out.
export default defineFunction({
  description: "Publishes events left in the outbox to the audit stream",
  trigger: { type: "schedule", everyMs: RELAY_EVERY_MS },
  resources: { economy },
  handler: async (_p: unknown, ctx) => {
    const r = await relayOutbox(await ctx.resources.economy.database(), contextPublisher(ctx));
    // events the fast path never published: worth a line, they mean a message did not finish
    if (r.published > r.duplicates) ctx.log.info({ published: r.published, duplicates: r.duplicates }, "outbox relay published events left behind");
    return r;
  },
});
