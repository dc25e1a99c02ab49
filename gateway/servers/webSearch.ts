import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";

// A local MCP server (stdio) with one tool, `web_search`, over a small corpus of documents
// (gateway/corpus/documents.json) ranked by keyword overlap. It stands in for a real search server
// in development and tests. Switches for tests (environment):
//   WEB_SEARCH_CORPUS      another corpus file (JSON array of {id,title,url,text})
//   WEB_SEARCH_CALL_LOG    append one line per tools/call to this file (to count real calls)
//   WEB_SEARCH_DELAY_MS    wait this long before answering every call
//   WEB_SEARCH_CRASH_ONCE  a file path: a call with `crash: true` exits the process (code 1) if the
//                          file does not exist yet, and creates it — so the next process answers
// and per call: `delay_ms` (wait before answering) and `crash` (exit at once, or once with the above).

type Doc = { id: string; title: string; url: string; text: string };

const corpusPath = process.env.WEB_SEARCH_CORPUS ?? resolve(import.meta.dirname, "../corpus/documents.json");
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

const server = new McpServer({ name: "syntropism-web-search", version: "0.1.0" });

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
    if (process.env.WEB_SEARCH_CALL_LOG) appendFileSync(process.env.WEB_SEARCH_CALL_LOG, `${JSON.stringify({ pid: process.pid, query, at: Date.now() })}\n`);
    if (crash) {
      const once = process.env.WEB_SEARCH_CRASH_ONCE;
      if (!once || !existsSync(once)) {
        if (once) writeFileSync(once, String(process.pid));
        process.exit(1);
      }
    }
    const wait = delay_ms ?? Number(process.env.WEB_SEARCH_DELAY_MS ?? 0);
    if (wait > 0) await sleep(wait);
    const results = search(corpus, query, limit ?? 5);
    return {
      content: [{ type: "text" as const, text: JSON.stringify({ query, results }) }],
      structuredContent: { query, results },
    };
  },
);

await server.connect(new StdioServerTransport());
