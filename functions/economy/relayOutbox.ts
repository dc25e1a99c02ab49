import { defineFunction } from "syntropism";
import { relayOutbox, RELAY_EVERY_MS } from "../../economy/events.ts";
import { database } from "../../economy/runtime.ts";
import { Header } from "../../host/headers.ts";

// The outbox relay: every 500 ms, in every worker (one at a time across them), events that have
// stayed unpublished for a second or more are published to AUDIT in outbox order, msg id = event id.
// The message that recorded them normally published them already (the fast path); this one does
// not depend on that message: a worker killed after commit, or a publish that failed and was never
// redelivered, still gets its events out.
export default defineFunction({
  description: "Publishes events left in the outbox to the audit stream",
  trigger: { type: "schedule", everyMs: RELAY_EVERY_MS },
  handler: async (_p: unknown, ctx) => {
    const sql = await database();
    const r = await relayOutbox(sql, (subject, envelope, msgId) => {
      // the event's own conversation, not the relay's tick
      const headers: Record<string, string> = { [Header.Sender]: envelope.from };
      if (envelope.correlation_id) headers[Header.CorrelationId] = envelope.correlation_id;
      if (envelope.causation_id) headers[Header.CausationId] = envelope.causation_id;
      return ctx.publish(subject, envelope, { msgId, headers });
    });
    // events the fast path never published: worth a line, they mean a message did not finish
    if (r.published > r.duplicates) ctx.log.info({ published: r.published, duplicates: r.duplicates }, "outbox relay published events left behind");
    return r;
  },
});
