import * as v from "valibot";

// The project's one configuration. Every environment variable the host, the economy, the gateway,
// the scenarios and tracing read is declared here — name, setting, default, meaning — and read here
// only: `loadSettings()` validates them once at start-up and the CLIs hand the result to the parts
// they start (the Host passes it to every resource's setup as `ctx.settings`). No value travels
// between components through process.env. docs/operations.md, "Environment", is this table
// (test/settings.test.ts checks that the two agree).

export type LogLevel = "debug" | "info" | "warn" | "error";
export type Resource = "cpu" | "memory" | "tokens" | "attention";
export type MarketSettings = Record<Resource, { supply: number; price: number; floor: number; target: number }>;

/** Units: cpu millicores, memory MiB, tokens LLM tokens, attention prompts — per window. Prices in credits per unit. */
export const DEFAULT_MARKET: MarketSettings = {
  cpu: { supply: 2000, price: 0.001, floor: 0.0001, target: 0.5 },
  memory: { supply: 4096, price: 0.0005, floor: 0.00005, target: 0.5 },
  tokens: { supply: 100_000, price: 0.00001, floor: 0.000001, target: 0.5 },
  attention: { supply: 1, price: 1, floor: 0.1, target: 0.5 },
};

export type Settings = {
  nats: { url?: string; creds?: string; authDir?: string };
  log: { level: LogLevel };
  host: { workers: number; natsServerBin?: string; workerIndex?: string };
  economy: { databaseUrl?: string; windowMs: number; market: MarketSettings; dbPool: number; embeddedPostgresUser?: string };
  gateway: { configFile?: string; verbose: boolean; defaultCallsPerHour: number; maxDeliver: number };
  otel: { sdkDisabled: boolean; tracesExporter?: string; endpoint?: string; tracesEndpoint?: string; serviceName?: string };
  webSearch: { corpus?: string; callLog?: string; crashOnce?: string; delayMs: number };
  agents: { workspaces: string; stopGraceMs: number; pidsLimit: number };
  sandbox: { driver: "auto" | "docker" | "process"; dockerHost?: string };
  llm: { localSeed: number; localApiKey?: string };
};

const text = v.pipe(v.string(), v.trim(), v.minLength(1));
const int = (min: number) => v.pipe(v.string(), v.trim(), v.regex(/^-?\d+$/, "must be an integer"), v.transform(Number), v.minValue(min, `must be ≥ ${min}`));
const flag = v.pipe(v.string(), v.trim(), v.toLowerCase(), v.picklist(["", "0", "1", "true", "false", "yes", "no"], "must be true or false"), v.transform((s) => ["1", "true", "yes"].includes(s)));
const url = (schemes: string[]) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.check((s) => s.split(",").every((u) => schemes.some((p) => u.trim().startsWith(`${p}://`))), `must be ${schemes.map((p) => `${p}://…`).join(" or ")}`),
  );

const MarketEntry = v.partial(
  v.strictObject({ supply: v.pipe(v.number(), v.minValue(0)), price: v.pipe(v.number(), v.gtValue(0)), floor: v.pipe(v.number(), v.gtValue(0)), target: v.pipe(v.number(), v.gtValue(0), v.maxValue(1)) }),
);
const MarketOverride = v.partial(v.strictObject({ cpu: MarketEntry, memory: MarketEntry, tokens: MarketEntry, attention: MarketEntry }));
const market = v.pipe(
  v.string(),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    try {
      return JSON.parse(dataset.value) as unknown;
    } catch (err) {
      addIssue({ message: `is not JSON: ${(err as Error).message}` });
      return NEVER;
    }
  }),
  MarketOverride,
  v.transform((over) => {
    const m = structuredClone(DEFAULT_MARKET);
    for (const r of Object.keys(m) as Resource[]) Object.assign(m[r], over[r] ?? {});
    return m;
  }),
);

type Var = {
  env: string;
  /** Where the value lands: `section.key`. */
  path: `${keyof Settings}.${string}`;
  schema: v.GenericSchema<string, unknown>;
  /** Shown in the docs' table; `—` when unset means "not set". */
  default: string;
  doc: string;
};

/** Every environment variable, in the order docs/operations.md lists them. */
export const ENVIRONMENT: readonly Var[] = [
  { env: "NATS_URL", path: "nats.url", schema: url(["nats", "tls", "ws", "wss"]), default: "`.data/nats.url` if `npm start` runs, else nats://127.0.0.1:4222", doc: "NATS server(s), comma-separated" },
  { env: "NATS_CREDS", path: "nats.creds", schema: text, default: "the component's file in `.data/auth` for the server `npm start` runs, else none", doc: "NATS credentials file (JWT and seed) to connect with" },
  { env: "NATS_AUTH_DIR", path: "nats.authDir", schema: text, default: "`.data/auth`", doc: "The operator's and accounts' keys the host issues and revokes agents' credentials with (`host dev` creates it)" },
  { env: "LOG_LEVEL", path: "log.level", schema: v.pipe(v.string(), v.trim(), v.toLowerCase(), v.picklist(["debug", "info", "warn", "error"], "must be debug, info, warn or error")), default: "info", doc: "Lowest level written (JSON lines on stderr)" },
  { env: "WORKERS", path: "host.workers", schema: int(1), default: "1", doc: "`host start` worker processes (`--workers` wins)" },
  { env: "NATS_SERVER_BIN", path: "host.natsServerBin", schema: text, default: "PATH, then /usr/sbin, /usr/local/bin", doc: "The nats-server binary `host dev`, `npm start` and the test helpers run" },
  { env: "SYNTROPISM_WORKER", path: "host.workerIndex", schema: text, default: "—", doc: "Set by `host start` for each worker process (its slot); not for users" },
  { env: "DATABASE_URL", path: "economy.databaseUrl", schema: url(["postgres", "postgresql"]), default: "the embedded cluster `npm start` runs in .data/pg", doc: "PostgreSQL of the ledger" },
  { env: "ECONOMY_WINDOW_MS", path: "economy.windowMs", schema: int(100), default: "1000", doc: "Auction window length (ms)" },
  { env: "ECONOMY_MARKET", path: "economy.market", schema: market, default: "see docs/economy.md", doc: "JSON overrides of supply, price, floor, target per resource (a fresh database only)" },
  { env: "ECONOMY_DB_POOL", path: "economy.dbPool", schema: int(1), default: "10", doc: "PostgreSQL connections per worker" },
  { env: "EMBEDDED_POSTGRES_USER", path: "economy.embeddedPostgresUser", schema: text, default: "`postgres` (as root) or the current user", doc: "OS user the embedded PostgreSQL runs as" },
  { env: "MCP_GATEWAY_CONFIG", path: "gateway.configFile", schema: text, default: "gateway/servers.json", doc: "The MCP servers the gateway fronts" },
  { env: "GATEWAY_VERBOSE", path: "gateway.verbose", schema: flag, default: "false", doc: "Copy MCP servers' stderr to the host's" },
  { env: "MCP_DEFAULT_MAX_CALLS_PER_HOUR", path: "gateway.defaultCallsPerHour", schema: int(0), default: "60", doc: "Per-agent MCP quota when mcp_quotas has no entry" },
  { env: "MCP_MAX_DELIVER", path: "gateway.maxDeliver", schema: int(1), default: "3", doc: "Attempts of one MCP request" },
  { env: "OTEL_SDK_DISABLED", path: "otel.sdkDisabled", schema: flag, default: "false", doc: "Turns tracing export off" },
  { env: "OTEL_TRACES_EXPORTER", path: "otel.tracesExporter", schema: v.pipe(v.string(), v.trim(), v.toLowerCase(), v.regex(/^(none|console|nats|otlp)(,.*)?$/, "must be none, console, nats or otlp")), default: "otlp when an endpoint is set, else none", doc: "Where spans go" },
  { env: "OTEL_EXPORTER_OTLP_ENDPOINT", path: "otel.endpoint", schema: url(["http", "https"]), default: "—", doc: "OTLP/HTTP base URL (+ /v1/traces)" },
  { env: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", path: "otel.tracesEndpoint", schema: url(["http", "https"]), default: "—", doc: "OTLP/HTTP traces URL, as is" },
  { env: "OTEL_SERVICE_NAME", path: "otel.serviceName", schema: text, default: "syntropism", doc: "service.name of the spans" },
  { env: "AGENT_WORKSPACES", path: "agents.workspaces", schema: text, default: "`.data/workspaces`", doc: "Folder of the agents' workspaces (one per agent, from agent/templates)" },
  { env: "AGENT_STOP_GRACE_MS", path: "agents.stopGraceMs", schema: int(0), default: "2000", doc: "Between SIGTERM at the end of an agent's window and the kill" },
  { env: "AGENT_PIDS_LIMIT", path: "agents.pidsLimit", schema: int(8), default: "64", doc: "Processes and threads an agent's container may have" },
  { env: "WEB_SEARCH_CORPUS", path: "webSearch.corpus", schema: text, default: "gateway/corpus/documents.json", doc: "The local search MCP server's documents" },
  { env: "WEB_SEARCH_DELAY_MS", path: "webSearch.delayMs", schema: int(0), default: "0", doc: "The local search server's delay per call (tests of timeouts)" },
  { env: "WEB_SEARCH_CALL_LOG", path: "webSearch.callLog", schema: text, default: "—", doc: "File the local search server appends each call to (tests)" },
  { env: "WEB_SEARCH_CRASH_ONCE", path: "webSearch.crashOnce", schema: text, default: "—", doc: "Marker file: the local search server exits once on a call (tests)" },
  { env: "SANDBOX_DRIVER", path: "sandbox.driver", schema: v.pipe(v.string(), v.trim(), v.toLowerCase(), v.picklist(["auto", "docker", "process"], "must be auto, docker or process")), default: "auto", doc: "How agents run: `docker` (isolated, limits enforced), `process` (plain child processes, nothing enforced), `auto` (Docker when its engine answers)" },
  { env: "DOCKER_HOST", path: "sandbox.dockerHost", schema: url(["unix", "tcp"]), default: "unix:///var/run/docker.sock", doc: "The Docker engine the sandbox driver and `npm run agents` use" },
  { env: "LLM_LOCAL_SEED", path: "llm.localSeed", schema: int(0), default: "0", doc: "Seed of the local LLM server (`npm run llm -- serve`) for requests that give none (docs/llm.md)" },
  { env: "LLM_LOCAL_API_KEY", path: "llm.localApiKey", schema: text, default: "—", doc: "When set, the local LLM server answers only `Authorization: Bearer <key>` (401 otherwise)" },
];

const DEFAULTS: Settings = {
  nats: {},
  log: { level: "info" },
  host: { workers: 1 },
  economy: { windowMs: 1000, market: DEFAULT_MARKET, dbPool: 10 },
  gateway: { verbose: false, defaultCallsPerHour: 60, maxDeliver: 3 },
  otel: { sdkDisabled: false },
  webSearch: { delayMs: 0 },
  agents: { workspaces: ".data/workspaces", stopGraceMs: 2000, pidsLimit: 64 },
  sandbox: { driver: "auto" },
  llm: { localSeed: 0 },
};

/** A setting that does not validate: names the variable, what it holds and what it must be. */
export class SettingsError extends Error {
  override name = "SettingsError";
  readonly code = "CONFIG_ERR_INVALID";
  readonly issues: { env: string; message: string }[];
  constructor(issues: { env: string; message: string }[]) {
    super(`invalid environment: ${issues.map((i) => `${i.env} ${i.message}`).join("; ")}`);
    this.issues = issues;
  }
}

/**
 * Reads and validates every variable of ENVIRONMENT from `env` (default process.env). An empty
 * value counts as unset. Throws SettingsError naming every variable that does not validate.
 */
export function loadSettings(env: Readonly<Record<string, string | undefined>> = process.env): Settings {
  const out = structuredClone(DEFAULTS) as Record<string, Record<string, unknown>>;
  const issues: { env: string; message: string }[] = [];
  for (const d of ENVIRONMENT) {
    const raw = env[d.env];
    if (raw === undefined || raw.trim() === "") continue;
    const r = v.safeParse(d.schema, raw);
    if (!r.success) {
      const shown = raw.length > 80 ? `${raw.slice(0, 80)}…` : raw;
      issues.push({ env: d.env, message: `(${JSON.stringify(shown)}) ${r.issues.map((i) => i.message).join("; ")}` });
      continue;
    }
    const [section, key] = d.path.split(".") as [string, string];
    out[section]![key] = r.output;
  }
  if (issues.length) throw new SettingsError(issues);
  return Object.freeze(out) as unknown as Settings;
}

/** The settings a resource was given (ctx.settings), or the environment's when the host got none. */
export function settingsOf(given: Readonly<Record<string, unknown>> | undefined): Settings {
  return given && "economy" in given && "gateway" in given ? (given as unknown as Settings) : loadSettings();
}

/**
 * The OTEL_* variables as the OpenTelemetry SDK names them (it reads them itself as well: the
 * exporter's endpoint, headers, timeouts — every standard variable works).
 */
export function otelEnvironment(env: Readonly<Record<string, string | undefined>> = process.env): Record<string, string | undefined> {
  return Object.fromEntries(ENVIRONMENT.filter((d) => d.env.startsWith("OTEL_")).map((d) => [d.env, env[d.env]]));
}
