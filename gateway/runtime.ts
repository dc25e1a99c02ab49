import { McpGateway } from "./client.ts";
import { loadGatewayConfig } from "./config.ts";

// The one gateway (MCP connections, limiters) per worker process, created on first use from
// MCP_GATEWAY_CONFIG or gateway/servers.json.

let shared: McpGateway | undefined;

export function sharedGateway(): McpGateway {
  shared ??= new McpGateway(loadGatewayConfig(), {
    onStderr: (server, line) => {
      if (process.env.GATEWAY_VERBOSE) process.stderr.write(`[mcp ${server}] ${line}\n`);
    },
  });
  return shared;
}

/** Stops the worker's MCP connections (tests, shutdown); the next use starts afresh. */
export async function closeSharedGateway(): Promise<void> {
  const g = shared;
  shared = undefined;
  await g?.close();
}

/** Per-agent quota default when mcp_quotas has no entry for the agent. */
export function defaultCallsPerHour(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.MCP_DEFAULT_MAX_CALLS_PER_HOUR ?? 60);
  return Number.isInteger(n) && n >= 0 ? n : 60;
}
