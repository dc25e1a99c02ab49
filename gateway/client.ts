import { resolve } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport, getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema, ErrorCode, McpError, type CallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import { DEFAULT_TIMEOUT_MS, type GatewayConfig, type ServerConfig } from "./config.ts";
import { ServerLimiter } from "./limiter.ts";
import { GatewayError } from "./errors.ts";

// The gateway's MCP client: one SDK Client per declared server, connected on first use, its tools
// listed once at connect and kept. A connection that closes (the stdio process died, the HTTP
// session failed) is dropped; the next use reconnects — after a backoff that doubles with each
// consecutive failure (250 ms … 10 s), so a crashing server is not respawned in a tight loop.
// Calls to one server go through a limiter (max concurrent, min gap between starts; limiter.ts) in
// this process.

export { GatewayError, GatewayErrorCode } from "./errors.ts";

type Conn = {
  client?: Client;
  connecting?: Promise<Client>;
  tools?: Tool[];
  failures: number;
  retryAt: number;
  limiter: ServerLimiter;
  stderrTail: string[];
};

export type GatewayOptions = {
  /** Called for every line a stdio server writes on stderr. */
  onStderr?: (server: string, line: string) => void;
  backoff?: { initialMs: number; maxMs: number };
};

export class McpGateway {
  readonly #config: GatewayConfig;
  readonly #conns = new Map<string, Conn>();
  readonly #opts: GatewayOptions;
  #closed = false;

  constructor(config: GatewayConfig, opts: GatewayOptions = {}) {
    this.#config = config;
    this.#opts = opts;
  }

  get config(): GatewayConfig {
    return this.#config;
  }

  servers(): string[] {
    return Object.keys(this.#config.servers);
  }

  server(name: string): ServerConfig {
    const s = Object.hasOwn(this.#config.servers, name) ? this.#config.servers[name] : undefined;
    if (!s) throw new GatewayError("UNKNOWN_SERVER", `no MCP server named ${JSON.stringify(name)} (known: ${this.servers().join(", ") || "none"})`, false);
    return s;
  }

  #conn(name: string): Conn {
    let c = this.#conns.get(name);
    if (!c) {
      const s = this.server(name);
      c = { failures: 0, retryAt: 0, stderrTail: [], limiter: new ServerLimiter({ maxConcurrent: s.max_concurrent ?? 4, minTimeMs: s.min_time_ms ?? 0 }) };
      this.#conns.set(name, c);
    }
    return c;
  }

  /** The connected client (connecting, or reconnecting after a failure, if needed). */
  async connect(name: string): Promise<Client> {
    if (this.#closed) throw new GatewayError("UNAVAILABLE", "the gateway is closed", true);
    const s = this.server(name);
    const c = this.#conn(name);
    if (c.client) return c.client;
    if (c.connecting) return c.connecting;
    const wait = c.retryAt - Date.now();
    if (wait > 0) throw new GatewayError("UNAVAILABLE", `MCP server ${name} failed ${c.failures} time(s); next attempt in ${wait} ms`, true);
    c.connecting = this.#open(name, s, c)
      .then((client) => {
        c.client = client;
        return client;
      })
      .catch((err: unknown) => {
        this.#failed(c);
        throw err instanceof GatewayError ? err : new GatewayError("UNAVAILABLE", `cannot connect to MCP server ${name}: ${(err as Error).message}${c.stderrTail.length ? `\n${c.stderrTail.join("\n")}` : ""}`, true, { cause: err });
      })
      .finally(() => {
        c.connecting = undefined;
      });
    return c.connecting;
  }

  #failed(c: Conn): void {
    c.failures++;
    const { initialMs, maxMs } = this.#opts.backoff ?? { initialMs: 250, maxMs: 10_000 };
    c.retryAt = Date.now() + Math.min(maxMs, initialMs * 2 ** (c.failures - 1));
  }

  async #open(name: string, s: ServerConfig, c: Conn): Promise<Client> {
    const client = new Client({ name: "syntropism-gateway", version: "0.1.0" });
    if (s.type === "stdio") {
      const transport = new StdioClientTransport({
        command: s.command === "node" ? process.execPath : s.command,
        args: s.args ?? [],
        env: { ...getDefaultEnvironment(), ...(s.env ?? {}) },
        cwd: resolve(this.#config.baseDir, s.cwd ?? "."),
        stderr: "pipe",
      });
      transport.stderr?.on("data", (chunk: Buffer) => {
        for (const line of chunk.toString("utf8").split("\n")) {
          if (!line.trim()) continue;
          c.stderrTail.push(line);
          if (c.stderrTail.length > 20) c.stderrTail.shift();
          this.#opts.onStderr?.(name, line);
        }
      });
      await client.connect(transport);
    } else {
      await client.connect(new StreamableHTTPClientTransport(new URL(s.url), { requestInit: { headers: s.headers ?? {} } }));
    }
    client.onclose = () => {
      // the process died or the session ended: the next use reconnects (with backoff if it keeps failing)
      if (c.client === client) {
        c.client = undefined;
        this.#failed(c);
      }
    };
    const listAll = async (): Promise<Tool[]> => {
      const tools: Tool[] = [];
      let cursor: string | undefined;
      do {
        const page = await client.listTools(cursor ? { cursor } : undefined, { timeout: s.timeout_ms ?? DEFAULT_TIMEOUT_MS });
        tools.push(...page.tools);
        cursor = page.nextCursor;
      } while (cursor);
      return tools;
    };
    // a server that announces a changed tool list is listed again; the old list stays if that fails
    client.setNotificationHandler(ToolListChangedNotificationSchema, async () => {
      c.tools = await listAll().catch(() => c.tools);
    });
    try {
      c.tools = await listAll();
    } catch (err) {
      await client.close().catch(() => {});
      throw err;
    }
    c.failures = 0;
    c.retryAt = 0;
    return client;
  }

  /** The server's tools, as listed when it was (last) connected. */
  async tools(name: string): Promise<Tool[]> {
    await this.connect(name);
    return this.#conn(name).tools ?? [];
  }

  async tool(server: string, tool: string): Promise<Tool> {
    const t = (await this.tools(server)).find((x) => x.name === tool);
    if (!t) throw new GatewayError("UNKNOWN_TOOL", `MCP server ${server} has no tool ${JSON.stringify(tool)}`, false);
    return t;
  }

  /** Connects every server and lists its tools; a server that cannot be reached is reported, not thrown. */
  async listAll(): Promise<{ server: string; tools?: Tool[]; error?: string }[]> {
    return Promise.all(
      this.servers().map(async (server) => {
        try {
          return { server, tools: await this.tools(server) };
        } catch (err) {
          return { server, error: (err as Error).message };
        }
      }),
    );
  }

  /**
   * Calls a tool: params are checked against the tool's input schema first (INVALID_PARAMS),
   * then the call waits for its turn on the server's limiter and runs with the timeout.
   */
  async call(server: string, tool: string, params: Record<string, unknown>, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<CallToolResult> {
    const s = this.server(server);
    const t = await this.tool(server, tool);
    const problems = checkParams(t.inputSchema as JsonSchema, params);
    if (problems.length) throw new GatewayError("INVALID_PARAMS", `invalid params for ${server}/${tool}: ${problems.join("; ")}`, false);
    const c = this.#conn(server);
    const timeout = opts.timeoutMs ?? s.timeout_ms ?? DEFAULT_TIMEOUT_MS;
    return c.limiter.schedule(async () => {
      const client = await this.connect(server);
      try {
        return (await client.callTool({ name: tool, arguments: params }, undefined, { timeout, signal: opts.signal })) as CallToolResult;
      } catch (err) {
        throw classify(err, server, tool, timeout);
      }
    });
  }

  /** Closes every connection (stdio servers are stopped). */
  async close(): Promise<void> {
    this.#closed = true;
    const conns = [...this.#conns.values()];
    this.#conns.clear();
    await Promise.all(
      conns.map(async (c) => {
        c.limiter.stop(new GatewayError("UNAVAILABLE", "the gateway is closed", true));
        const client = c.client ?? (await c.connecting?.catch(() => undefined));
        c.client = undefined;
        await client?.close().catch(() => {});
      }),
    );
  }
}

function classify(err: unknown, server: string, tool: string, timeoutMs: number): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof McpError) {
    if (err.code === ErrorCode.RequestTimeout) return new GatewayError("TIMEOUT", `${server}/${tool} did not answer within ${timeoutMs} ms`, true, { cause: err });
    if (err.code === ErrorCode.ConnectionClosed) return new GatewayError("UNAVAILABLE", `${server} closed the connection during ${tool}: ${err.message}`, true, { cause: err });
    if (err.code === ErrorCode.InvalidParams) return new GatewayError("INVALID_PARAMS", err.message, false, { cause: err });
    if (err.code === ErrorCode.MethodNotFound) return new GatewayError("UNKNOWN_TOOL", err.message, false, { cause: err });
    return new GatewayError("TOOL_ERROR", err.message, false, { cause: err });
  }
  if ((err as Error)?.name === "AbortError") return new GatewayError("TIMEOUT", `${server}/${tool} aborted: ${(err as Error).message}`, true, { cause: err });
  // transport failures (process gone, socket reset): worth another try
  return new GatewayError("UNAVAILABLE", `${server}/${tool} failed: ${(err as Error)?.message ?? String(err)}`, true, { cause: err });
}

type JsonSchema = { type?: string | string[]; properties?: Record<string, JsonSchema>; required?: string[]; additionalProperties?: boolean | JsonSchema; enum?: unknown[] };

function typeOf(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "array";
  if (typeof x === "number") return Number.isInteger(x) ? "integer" : "number";
  return typeof x;
}

/**
 * A light check of params against a tool's JSON schema — required properties, property types,
 * enums, no unknown properties when the schema forbids them — so that a request that can never
 * succeed is refused before anything is charged. The server validates fully.
 */
export function checkParams(schema: JsonSchema | undefined, params: Record<string, unknown>): string[] {
  const out: string[] = [];
  if (!schema || typeof params !== "object" || params === null || Array.isArray(params)) return typeof params === "object" && params !== null && !Array.isArray(params) ? out : ["params must be an object"];
  for (const r of schema.required ?? []) if (!(r in params)) out.push(`${r}: required`);
  for (const [k, val] of Object.entries(params)) {
    const p = schema.properties?.[k];
    if (!p) {
      if (schema.additionalProperties === false) out.push(`${k}: unknown property`);
      continue;
    }
    const want = p.type === undefined ? [] : Array.isArray(p.type) ? p.type : [p.type];
    const got = typeOf(val);
    if (want.length && !want.some((w) => w === got || (w === "number" && got === "integer"))) out.push(`${k}: expected ${want.join("|")}, got ${got}`);
    if (p.enum && !p.enum.some((e) => e === val)) out.push(`${k}: not one of ${JSON.stringify(p.enum)}`);
  }
  return out;
}
