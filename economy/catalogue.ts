import * as v from "valibot";

// The event catalogue: every fact the economy states, its subject on the audit stream and the
// schema of its payload. The audit stream's subjects, the validation of emitted events and the
// table in docs/economy.md all come from here. Amounts in payloads are credits (numbers, up to six
// decimals); the ledger keeps micro-credits.

const id = v.pipe(v.string(), v.minLength(1));
const credits = v.pipe(v.number(), v.finite(), v.minValue(0));
const resource = v.picklist(["cpu", "memory", "tokens", "attention"]);
/** What a bid is for: a resource, or a bundle of them (its components in `bundle`). */
const bidResource = v.picklist(["cpu", "memory", "tokens", "attention", "bundle"]);
const units = v.pipe(v.number(), v.integer(), v.minValue(0));
/** A bundle's components in the market's names and units (cpu millicores, memory MiB, tokens, attention prompts); absent = none. */
const bundle = v.object({ cpu: v.optional(units), memory: v.optional(units), tokens: v.optional(units), attention: v.optional(units) });
/** Milliseconds since the epoch. */
const instant = v.pipe(v.number(), v.integer(), v.minValue(0));

export const EVENTS = {
  agent_spawned: {
    subject: "system.agent_spawned",
    description: "an agent exists: created at genesis (parent null) or spawned by a parent",
    schema: v.object({ agent_id: id, parent_id: v.nullable(id), credits }),
  },
  agent_terminated: {
    subject: "system.agent_terminated",
    description: "an operator terminated an agent: its open bids were released (bid_lost AGENT_TERMINATED), its commands are refused from now on, its credits stay in its account; its NATS credentials are revoked in reaction to this event",
    schema: v.object({ agent_id: id, reason: v.string(), balance: credits, bids_released: v.pipe(v.number(), v.integer(), v.minValue(0)), released: credits }),
  },
  credits_minted: {
    subject: "economic.credits_minted",
    description: "new credits from the mint: a genesis grant or a human reward",
    schema: v.object({ agent_id: id, amount: credits, kind: v.picklist(["genesis", "reward"]), balance: credits }),
  },
  credits_transferred: {
    subject: "economic.credits_transferred",
    description: "credits moved from one agent to another (transfer, spawn funding)",
    schema: v.object({ from: id, to: id, amount: credits, kind: v.string(), from_balance: credits, to_balance: credits }),
  },
  credits_burned: {
    subject: "economic.credits_burned",
    description: "credits spent on resources, removed from circulation",
    schema: v.object({ agent_id: id, amount: credits, bid_id: v.string(), window_id: v.number(), balance: credits }),
  },
  bid_placed: {
    subject: "market.bid_placed",
    description: "a bid was accepted into a window's auction; its amount is reserved. A bundle bid has resource \"bundle\", quantity 1, price = amount = the whole bundle's price, and its components in `bundle`",
    schema: v.object({ bid_id: v.string(), agent_id: id, window_id: v.number(), resource: bidResource, quantity: v.number(), price: credits, amount: credits, bundle: v.optional(bundle) }),
  },
  bid_rejected: {
    subject: "market.bid_rejected",
    description: "a bid was refused: reason INSUFFICIENT_FUNDS, UNKNOWN_AGENT, AGENT_TERMINATED, BELOW_MARKET_PRICE, EXCEEDS_SUPPLY",
    schema: v.object({ agent_id: v.string(), reason: v.string(), message: v.string(), resource: v.optional(v.string()), amount: v.optional(credits) }),
  },
  resources_allocated: {
    subject: "market.resources_allocated",
    description: "a bid won its window: the resources are the agent's for the window",
    schema: v.object({ bid_id: v.string(), agent_id: id, window_id: v.number(), resource, quantity: v.number(), price: credits, amount: credits }),
  },
  bid_lost: {
    subject: "market.bid_lost",
    description: "a bid did not win (OUTBID, EXCEEDS_SUPPLY, BELOW_RESERVE), or was released when its agent was terminated (AGENT_TERMINATED); nothing was charged. A bundle's names its components (`bundle`) and those that did not fit (`short`)",
    schema: v.object({ bid_id: v.string(), agent_id: id, window_id: v.number(), resource: bidResource, reason: v.string(), bundle: v.optional(bundle), short: v.optional(v.array(resource)) }),
  },
  bundle_allocated: {
    subject: "market.bundle_allocated",
    description:
      "a bundle bid won: every component is the agent's for the window after the one it was bid in (run_window_id, from window_start to window_end, ms since the epoch); what a container is launched with (cpu millicores, memory_mb MiB); runnable when it has cpu and memory. Once per winning bundle (bundle_id)",
    schema: v.object({
      bundle_id: v.string(),
      bid_id: v.string(),
      agent_id: id,
      window_id: v.number(),
      run_window_id: v.number(),
      window_start: instant,
      window_end: instant,
      duration_ms: v.pipe(v.number(), v.integer(), v.minValue(1)),
      cpu: units,
      memory_mb: units,
      tokens: units,
      attention: units,
      amount: credits,
      runnable: v.boolean(),
    }),
  },
  price_update: {
    subject: "market.price_update",
    description: "a resource's price after a window, from its utilization (also a core broadcast)",
    schema: v.object({ resource, window_id: v.number(), price: credits, previous_price: credits, utilization: v.number(), supply: v.number(), demand: v.number(), allocated: v.number() }),
  },
  window_cleared: {
    subject: "market.window_cleared",
    description: "a window's auction ran (exactly once)",
    schema: v.object({ window_id: v.number(), bids: v.number(), winners: v.number(), burned: credits }),
  },
  prompt_posted: {
    subject: "system.prompt_posted",
    description: "an agent asked a human for attention",
    schema: v.object({ prompt_id: v.string(), agent_id: id, question: v.string() }),
  },
  reward_granted: {
    subject: "economic.reward_granted",
    description: "a human rewarded an agent; the reward was minted",
    schema: v.object({ agent_id: id, amount: credits, prompt_id: v.nullable(v.string()), reason: v.string(), balance: credits }),
  },
  message_sent: {
    subject: "system.message_sent",
    description: "an agent sent another agent a message (delivered on agent.<to>.inbox)",
    schema: v.object({ message_id: v.string(), from: id, to: id, body: v.string() }),
  },
  mcp_completed: {
    subject: "mcp.completed",
    description: "an agent's MCP tool request through the gateway finished (ok, cached, or with an error outcome); cost is what it was charged",
    schema: v.object({
      request_id: v.string(),
      agent_id: v.string(),
      server: v.string(),
      tool: v.string(),
      outcome: v.picklist(["ok", "tool_error", "timeout", "unavailable", "unknown_server", "unknown_tool", "invalid_params", "over_quota", "insufficient_funds", "unknown_agent"]),
      cache_hit: v.boolean(),
      cost: credits,
      duration_ms: v.pipe(v.number(), v.minValue(0)),
    }),
  },
  execution_started: {
    subject: "system.execution_started",
    description: "the orchestrator launched an agent for the window it paid for, in a sandbox with the limits it won (sandbox docker, or process: unsandboxed, dev only)",
    schema: v.object({
      execution_id: v.string(),
      agent_id: id,
      window_id: v.number(),
      sandbox: v.picklist(["docker", "process"]),
      container_id: v.string(),
      limits: v.object({ memory_mib: v.number(), cpu_millicores: v.number(), pids: v.number() }),
      ends_at: v.string(),
    }),
  },
  execution_finished: {
    subject: "system.execution_finished",
    description: "an agent's run ended: succeeded (exit 0), failed (a non-zero exit, or the sandbox could not run it) or killed (OOM, or still running at the end of its window: TIMEOUT)",
    schema: v.object({
      execution_id: v.string(),
      agent_id: id,
      window_id: v.number(),
      status: v.picklist(["succeeded", "failed", "killed"]),
      reason: v.string(),
      exit_code: v.nullable(v.number()),
      cpu_ms: v.nullable(v.number()),
      memory_peak_mb: v.nullable(v.number()),
      duration_ms: v.nullable(v.number()),
    }),
  },
} as const;

export type EventType = keyof typeof EVENTS;
export type EventPayload<T extends EventType> = v.InferOutput<(typeof EVENTS)[T]["schema"]>;

/** Every audit subject, for the AUDIT stream's declaration. */
export const AUDIT_SUBJECTS: string[] = [...new Set(Object.values(EVENTS).map((e) => e.subject))];

export function subjectOf(type: EventType): string {
  return EVENTS[type].subject;
}
