import { loadSettings } from "../config/settings.ts";
import { McpGateway } from "./client.ts";
import { loadGatewayConfig, toolCost } from "./config.ts";

// npm run gateway -- tools                              every server's tools (connects each server)
// npm run gateway -- call SERVER TOOL '{"query":"…"}'    one call, result as JSON
// MCP_GATEWAY_CONFIG=path picks another servers.json.

const [cmd, ...rest] = process.argv.slice(2);
const usage = "usage: gateway tools [--json] | gateway call SERVER TOOL [JSON_PARAMS]";

async function main(): Promise<number> {
  const settings = loadSettings().gateway;
  // servers.json may name `${VAR}`s (tokens, paths): expanded from the environment as it loads
  const config = loadGatewayConfig(settings.configFile, process.env);
  const gw = new McpGateway(config, { onStderr: (s, l) => settings.verbose && console.error(`[${s}] ${l}`) });
  try {
    if (cmd === "tools") {
      const all = await gw.listAll();
      if (rest.includes("--json")) {
        console.log(JSON.stringify(all, null, 2));
      } else {
        for (const s of all) {
          if (s.error) {
            console.log(`${s.server}: UNAVAILABLE — ${s.error}`);
            continue;
          }
          for (const t of s.tools ?? []) {
            const props = Object.keys((t.inputSchema as { properties?: object }).properties ?? {}).join(", ");
            console.log(`${s.server}/${t.name}  cost ${toolCost(config.servers[s.server]!, t.name)} credits  (${props})\n    ${t.description ?? ""}`);
          }
        }
      }
      return all.some((s) => s.error) ? 1 : 0;
    }
    if (cmd === "call" && rest.length >= 2) {
      const [server, tool, json] = rest as [string, string, string?];
      const result = await gw.call(server, tool, json ? (JSON.parse(json) as Record<string, unknown>) : {});
      console.log(JSON.stringify(result, null, 2));
      return result.isError ? 1 : 0;
    }
    console.error(usage);
    return 64;
  } finally {
    await gw.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`gateway: ${(err as Error).message}`);
    process.exit(1);
  },
);
