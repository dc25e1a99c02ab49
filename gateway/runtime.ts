import { defineResource } from "syntropism";
import { settingsOf } from "../config/settings.ts";
import { McpGateway } from "./client.ts";
import { DEFAULT_CONFIG_PATH, loadGatewayConfig } from "./config.ts";

// The gateway as a host resource: one McpGateway (MCP connections, limiters) per host, created when
// the first function naming it starts (from MCP_GATEWAY_CONFIG or gateway/servers.json), closed
// when the host stops.

export type Gateway = {
  mcp: McpGateway;
  /** Per-agent quota when mcp_quotas has no entry for the agent (MCP_DEFAULT_MAX_CALLS_PER_HOUR). */
  defaultCallsPerHour: number;
};

export const gateway = defineResource<Gateway>({
  name: "gateway",
  setup: (ctx) => {
    const s = settingsOf(ctx.settings).gateway;
    // servers.json may name `${VAR}`s (tokens, paths): expanded from the environment as it loads
    const config = loadGatewayConfig(s.configFile ?? DEFAULT_CONFIG_PATH, process.env);
    const mcp = new McpGateway(config, { onStderr: (server, line) => (s.verbose ? process.stderr.write(`[mcp ${server}] ${line}\n`) : undefined) });
    return { mcp, defaultCallsPerHour: s.defaultCallsPerHour };
  },
  release: (g) => g.mcp.close(),
});
