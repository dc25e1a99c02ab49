import * as v from "valibot";
import { defineFunction } from "syntropism";
import { orchestrator } from "../../orchestrator/resource.ts";

// Every agent that won a runnable bundle (cpu and memory) runs in the window it paid for: this
// schedules the execution when the clearing states `bundle_allocated` on AUDIT, and the
// orchestrator launches it at the window's start with exactly what it won (docs/agents.md).
// Redeliveries find the execution scheduled already: an agent runs at most once per window.
export default defineFunction({
  description: "Schedules the run of each agent that won a runnable bundle",
  trigger: { type: "jetstream", stream: "AUDIT", subject: "market.bundle_allocated" },
  schema: v.object({
    id: v.string(),
    type: v.literal("bundle_allocated"),
    correlation_id: v.string(),
    payload: v.object({
      bundle_id: v.string(),
      agent_id: v.string(),
      run_window_id: v.number(),
      window_start: v.number(),
      window_end: v.number(),
      cpu: v.number(),
      memory_mb: v.number(),
      runnable: v.boolean(),
    }),
  }),
  resources: { orchestrator },
  handler: async (event, ctx) => {
    const p = event.payload;
    if (!p.runnable) return { agent_id: p.agent_id, scheduled: false, why: "not runnable: a bundle needs cpu and memory" };
    const executionId = await ctx.resources.orchestrator.schedule({
      agentId: p.agent_id,
      windowId: p.run_window_id,
      bundleId: p.bundle_id,
      windowStart: p.window_start,
      windowEnd: p.window_end,
      limits: { memoryMiB: p.memory_mb, cpuMillicores: p.cpu },
      correlationId: event.correlation_id,
      sourceMsgId: event.id,
    });
    return { agent_id: p.agent_id, window_id: p.run_window_id, scheduled: executionId !== undefined, execution_id: executionId ?? null };
  },
});
