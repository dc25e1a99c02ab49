import { defineConfig } from "syntropism";
import { AUDIT_SUBJECTS } from "./economy/catalogue.ts";
import { classifyEconomyError } from "./economy/errors.ts";

// Every stream, consumer default and KV bucket the project's functions use. `host streams plan`
// compares this with the server; `host streams apply` (or `host start --apply`, or `npm start`)
// makes the server match. The host adds its own: the DEAD_LETTERS stream and the host_ratelimit
// and host_runs buckets.
export default defineConfig({
  service: { name: "syntropism", version: "0.1.0" },
  // One classifier for every function (table in docs/host.md): refusals and PostgreSQL class 22/23
  // are dead-lettered at once with their code; a lost database connection is waited out.
  classifyError: classifyEconomyError,
  streams: [
    {
      name: "MARKET",
      description: "Bids and auction ticks (work queue)",
      subjects: ["market.bid.*", "market.tick"],
      retention: "workqueue",
      maxMsgs: 1_000_000,
      maxBytes: 1024 * 1024 * 1024,
      discard: "new",
    },
    {
      name: "ECONOMY",
      description: "Economy commands: genesis, transfers, spawns, rewards, terminations, prompts, messages (work queue)",
      subjects: ["admin.genesis", "admin.reward.grant", "admin.agent.terminate", "economic.transfer.*", "economic.spawn.*", "agent.*.prompt", "agent.*.message"],
      retention: "workqueue",
      maxMsgs: 1_000_000,
      maxBytes: 1024 * 1024 * 1024,
      discard: "new",
    },
    {
      name: "MCP",
      description: "Agents' MCP tool requests for the gateway (functions/mcp, work queue)",
      subjects: ["mcp.request.>"],
      retention: "workqueue",
      maxMsgs: 100_000,
      maxBytes: 256 * 1024 * 1024,
      discard: "new",
    },
    {
      name: "AUDIT",
      description: "Every economic fact as an event envelope (economy/catalogue.ts)",
      subjects: AUDIT_SUBJECTS,
      retention: "limits",
      storage: "file",
      maxAgeMs: 30 * 24 * 3600 * 1000,
      maxBytes: 10 * 1024 * 1024 * 1024,
      discard: "old",
    },
  ],
  kv: [
    { bucket: "agent_state", description: "Per-agent balance read model (rebuilt from the ledger)", history: 1 },
    { bucket: "market_prices", description: "Per-resource price read model", history: 5 },
    { bucket: "mcp_cache", description: "MCP gateway: tool results by hash of server, tool and canonical params", history: 1, ttlMs: 3600_000 },
    { bucket: "mcp_quotas", description: "MCP gateway: per-agent quota, key agent id, {max_mcp_calls_per_hour}", history: 1 },
    { bucket: "mcp_usage", description: "MCP gateway: per-agent call counters (GCRA, compare-and-swap)", history: 1 },
  ],
  consumerDefaults: {
    ackWaitMs: 30_000,
    maxAckPending: 10_000,
    concurrency: 8,
    timeoutMs: 30_000,
    maxDeliver: 5,
  },
});
