import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import * as v from "valibot";
import { GatewayError, GatewayErrorCode } from "./errors.ts";

// gateway/servers.json: the MCP servers the gateway may call, how to reach them, and what their
// tools cost. MCP_GATEWAY_CONFIG names another file. `${VAR}` in env values, args, url and headers
// is replaced by the environment variable (API keys stay out of the file).

export const GATEWAY_ROOT = resolve(import.meta.dirname, "..");
export const DEFAULT_CONFIG_PATH = resolve(import.meta.dirname, "servers.json");

const name = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/));
const credits = v.pipe(v.number(), v.finite(), v.minValue(0));
const toolConfig = v.object({
  cost: v.optional(credits),
  cache_ttl_ms: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
});
const common = {
  /** credits per call of a tool not listed in `tools` */
  default_cost: v.optional(credits),
  tools: v.optional(v.record(v.string(), toolConfig)),
  /** the limiter (limiter.ts): calls in flight to this server from one worker, and the minimum gap between call starts */
  max_concurrent: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  min_time_ms: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  /** per-call timeout when the request gives none */
  timeout_ms: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
};
const serverConfig = v.variant("type", [
  v.object({
    type: v.literal("stdio"),
    command: v.pipe(v.string(), v.minLength(1)),
    args: v.optional(v.array(v.string())),
    env: v.optional(v.record(v.string(), v.string())),
    cwd: v.optional(v.string()),
    ...common,
  }),
  v.object({
    type: v.literal("http"),
    url: v.pipe(v.string(), v.url()),
    headers: v.optional(v.record(v.string(), v.string())),
    ...common,
  }),
]);
const fileSchema = v.object({ servers: v.record(name, serverConfig) });

export type ServerConfig = v.InferOutput<typeof serverConfig>;
export type GatewayConfig = { servers: Record<string, ServerConfig>; baseDir: string };

export const DEFAULT_COST = 0.01;
export const DEFAULT_CACHE_TTL_MS = 10 * 60_000;
export const DEFAULT_TIMEOUT_MS = 10_000;

function expand(s: string, env: Readonly<Record<string, string | undefined>>): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, k: string) => env[k] ?? "");
}

export function parseGatewayConfig(raw: unknown, baseDir: string, env: Readonly<Record<string, string | undefined>> = {}): GatewayConfig {
  const parsed = v.safeParse(fileSchema, raw);
  if (!parsed.success) throw new GatewayError(GatewayErrorCode.Config, `gateway config: ${parsed.issues.map((i) => `${v.getDotPath(i) ?? "(root)"}: ${i.message}`).join("; ")}`, false);
  const servers: Record<string, ServerConfig> = {};
  for (const [k, s] of Object.entries(parsed.output.servers)) {
    if (s.type === "stdio") {
      servers[k] = {
        ...s,
        args: s.args?.map((a) => expand(a, env)),
        env: s.env && Object.fromEntries(Object.entries(s.env).map(([ek, ev]) => [ek, expand(ev, env)])),
      };
    } else {
      servers[k] = { ...s, url: expand(s.url, env), headers: s.headers && Object.fromEntries(Object.entries(s.headers).map(([hk, hv]) => [hk, expand(hv, env)])) };
    }
  }
  return { servers, baseDir };
}

/** Reads MCP_GATEWAY_CONFIG, else gateway/servers.json. Relative paths (cwd) are taken from the repository root. */
export function loadGatewayConfig(path: string = DEFAULT_CONFIG_PATH, env: Readonly<Record<string, string | undefined>> = {}): GatewayConfig {
  const file = resolve(path);
  const raw = JSON.parse(readFileSync(file, "utf8")) as unknown;
  return parseGatewayConfig(raw, GATEWAY_ROOT, env);
}

export function toolCost(s: ServerConfig, tool: string): number {
  return s.tools?.[tool]?.cost ?? s.default_cost ?? DEFAULT_COST;
}

export function toolCacheTtl(s: ServerConfig, tool: string): number {
  return s.tools?.[tool]?.cache_ttl_ms ?? DEFAULT_CACHE_TTL_MS;
}
