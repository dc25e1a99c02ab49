import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { loadSettings } from "../../config/settings.ts";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";

// A local MCP server with one tool, `web_search`, over a small corpus of documents
// (gateway/corpus/documents.json) ranked by keyword overlap. It stands in for a real search server
// in development and tests. Transports:
//   (no arguments)         stdio: MCP on stdin/stdout (what gateway/servers.json starts)
//   --http [PORT]          Streamable HTTP on http://127.0.0.1:PORT/mcp (default PORT 0: a free
//                          port). Prints `listening on http://127.0.0.1:<port>/mcp` on stdout once
//                          bound. Stateless (no sessions): each POST gets a fresh McpServer and
//                          transport, answered as JSON (no SSE); GET/DELETE are 405. Loopback only,
//                          and requests whose Host header is not a loopback name are refused (403).
// Switches for tests (environment):
//   WEB_SEARCH_CORPUS      another corpus file (JSON array of {id,title,url,text})
//   WEB_SEARCH_CALL_LOG    append one line per tools/call to this file (to count real calls)
//   WEB_SEARCH_DELAY_MS    wait this long before answering every call
//   WEB_SEARCH_CRASH_ONCE  a file path: a call with `crash: true` exits the process (code 1) if the
//                          file does not exist yet, and creates it — so the next process answers
// and per call: `delay_ms` (wait before answering) and `crash` (exit at once, or once with the above).

type Doc = { id: string; title: string; url: string; text: string };

const settings = loadSettings().webSearch;
const corpusPath = settings.corpus ?? resolve(import.meta.dirname, "../corpus/documents.json");
const corpus = JSON.parse(readFileSync(corpusPath, "utf8")) as Doc[];

const words = (s: string): string[] => [...(s.toLowerCase().match(/[a-z0-9]+/g) ?? [])];

/** Keyword scoring: each query term found in a document counts its frequency there, title hits ×3, weighted by rarity. */
export function search(docs: Doc[], query: string, limit: number): { id: string; title: string; url: string; snippet: string; score: number }[] {
  const terms = [...new Set(words(query))];
  const df = new Map(terms.map((t) => [t, docs.filter((d) => words(`${d.title} ${d.text}`).includes(t)).length]));
  return docs
    .map((d) => {
      const title = words(d.title);
      const body = words(d.text);
      let score = 0;
      for (const t of terms) {
        const n = df.get(t)!;
        if (!n) continue;
        const idf = Math.log(1 + docs.length / n);
        score += idf * (3 * title.filter((w) => w === t).length + body.filter((w) => w === t).length);
      }
      return { id: d.id, title: d.title, url: d.url, snippet: d.text.slice(0, 200), score: Math.round(score * 1000) / 1000 };
    })
    .filter((r) => r.score > 0)
    .sort((a, b) => b.score - a.score || a.id.localeCompare(b.id))
    .slice(0, limit);
}

function createServer(): McpServer {
  const server = new McpServer({ name: "syntropism-web-search", version: "0.1.0" });
  registerWebSearch(server);
  return server;
}

function registerWebSearch(server: McpServer): void {
  server.registerTool(
    "web_search",
    {
      description: "Searches a small local corpus of documents by keywords; returns the best matches with title, url and snippet",
      inputSchema: {
        query: z.string().min(1).describe("keywords"),
        limit: z.number().int().min(1).max(20).optional().describe("at most this many results (default 5)"),
        delay_ms: z.number().int().min(0).max(600_000).optional().describe("testing: wait this long before answering"),
        crash: z.boolean().optional().describe("testing: the server process exits during the call"),
      },
    },
    async ({ query, limit, delay_ms, crash }) => {
      if (settings.callLog) appendFileSync(settings.callLog, `${JSON.stringify({ pid: process.pid, query, at: Date.now() })}\n`);
      if (crash) {
        const once = settings.crashOnce;
        if (!once || !existsSync(once)) {
          if (once) writeFileSync(once, String(process.pid));
          process.exit(1);
        }
      }
      const wait = delay_ms ?? settings.delayMs;
      if (wait > 0) await sleep(wait);
      const results = search(corpus, query, limit ?? 5);
      return {
        content: [{ type: "text" as const, text: JSON.stringify({ query, results }) }],
        structuredContent: { query, results },
      };
    },
  );
}

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);

function reply(res: ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message }, id: null }));
}

/** Streamable HTTP, stateless, as in the SDK's simpleStatelessStreamableHttp example (on node:http rather than express). */
async function serveHttp(port: number): Promise<void> {
  const http = createHttpServer(async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (url.pathname !== "/mcp") return reply(res, 404, "not found: the MCP endpoint is /mcp");
    const host = (req.headers.host ?? "").replace(/:\d+$/, "");
    if (!LOOPBACK_HOSTS.has(host)) return reply(res, 403, `host ${JSON.stringify(req.headers.host ?? "")} not allowed`);
    if (req.method !== "POST") return reply(res, 405, "method not allowed (stateless server: POST only)", { allow: "POST" });
    const server = createServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on("close", () => {
      void transport.close();
      void server.close();
    });
    try {
      await server.connect(transport);
      await transport.handleRequest(req, res);
    } catch (err) {
      process.stderr.write(`web_search: ${(err as Error).stack ?? String(err)}\n`);
      if (!res.headersSent) reply(res, 500, "internal server error");
    }
  });
  await new Promise<void>((ok, fail) => {
    http.once("error", fail);
    http.listen(port, "127.0.0.1", () => ok());
  });
  const { port: bound } = http.address() as AddressInfo;
  process.stdout.write(`listening on http://127.0.0.1:${bound}/mcp\n`);
  const stop = () => {
    http.close(() => process.exit(0));
    http.closeAllConnections();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

const httpFlag = process.argv.indexOf("--http");
if (httpFlag === -1) {
  await createServer().connect(new StdioServerTransport());
} else {
  const arg = process.argv[httpFlag + 1];
  const port = arg === undefined || arg.startsWith("-") ? 0 : Number(arg);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`web_search: --http wants a port number (0 = any free port), got ${JSON.stringify(arg)}\n`);
    process.exit(2);
  }
  await serveHttp(port);
}
