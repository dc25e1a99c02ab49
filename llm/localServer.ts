import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { decide, findAgentState } from "./policy.ts";

// A local OpenAI-compatible LLM server. There is no internet on the development and CI machines, so
// development, the tests and the demo need a model that answers on loopback: this one speaks the
// Chat Completions API that OpenAI's SDKs and most other clients speak (POST /v1/chat/completions,
// streaming as server-sent events, GET /v1/models), counts tokens with a documented estimate, and
// answers deterministically for a seed. It can fail on request (x-fake-* headers, or the same as
// markers in the last user message) so that clients' retries and timeouts can be tested against a
// real server. When the prompt carries an agent's state (what env.json holds) the answer is a JSON
// decision from llm/policy.ts that the agent can act on. docs/llm.md describes all of it.

export const DEFAULT_MODEL = "syntropism-local";
/** Characters per token of the estimate: tokens(s) = ceil(code points / 4). */
export const CHARS_PER_TOKEN = 4;
/** Tokens counted per message on top of its content (role and delimiters). */
export const TOKENS_PER_MESSAGE = 3;
const MAX_BODY = 1 << 20;

export type LocalLlmOptions = {
  /** Port to listen on, on 127.0.0.1; 0 (default) picks a free one. */
  port?: number;
  /** The seed of requests that give none (default 0). */
  seed?: number;
  /** When set, every request must carry `Authorization: Bearer <apiKey>` (401 otherwise). */
  apiKey?: string;
  /** The model GET /v1/models lists (requests may name any model; it is echoed). */
  model?: string;
};

export type LocalLlmServer = {
  /** The base URL clients take: http://127.0.0.1:PORT/v1 */
  baseURL: string;
  port: number;
  /** Every request answered, in order: method, path and status (what a test counts retries with). */
  requests: { method: string; path: string; status: number }[];
  close(): Promise<void>;
};

type Message = { role: string; content: string };
type ChatRequest = {
  model: string;
  messages: Message[];
  maxTokens?: number;
  seed?: number;
  stream: boolean;
  includeUsage: boolean;
};

/** The token estimate: ceil(code points / CHARS_PER_TOKEN). */
export function estimateTokens(text: string): number {
  return Math.ceil([...text].length / CHARS_PER_TOKEN);
}

export function promptTokens(messages: readonly Message[]): number {
  return messages.reduce((n, m) => n + estimateTokens(m.content) + TOKENS_PER_MESSAGE, 0);
}

/** A number generator in [0, 1) from a 32-bit seed (mulberry32): small, fast and the same everywhere. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SENTENCES = [
  "The market clears at the end of every window, and the highest bids within supply win.",
  "Credits that are spent are burned, so every bid should be worth its price.",
  "A bundle of CPU and memory is won all together or not at all.",
  "Prices follow utilization: busy resources get dearer, idle ones cheaper.",
  "An agent runs only in the windows it paid for, with exactly what it won.",
  "Human rewards mint new credits for work that people found useful.",
  "Waiting a window costs nothing but time.",
  "Every fact is an event on the audit stream.",
];

/** The answer to `messages` for `seed`: a decision when the last user message holds an agent state, else a short text. */
export function answer(messages: readonly Message[], seed: number): string {
  const last = [...messages].reverse().find((m) => m.role === "user")?.content ?? "";
  const digest = createHash("sha256").update(`${seed}\0${JSON.stringify(messages)}`).digest();
  const random = generator(digest.readUInt32BE(0));
  const state = findAgentState(last);
  if (state) return JSON.stringify(decide(state, random()));
  const topic = last.replace(/\s+/g, " ").trim().slice(0, 60);
  const pool = [...SENTENCES];
  const picked = Array.from({ length: 2 + Math.floor(random() * 2) }, () => pool.splice(Math.floor(random() * pool.length), 1)[0]!);
  return `You asked about "${topic}". ${picked.join(" ")}`;
}

/** Cuts `text` to at most `maxTokens` tokens of the estimate. */
function truncate(text: string, maxTokens: number | undefined): { content: string; finish: "stop" | "length" } {
  if (maxTokens === undefined || estimateTokens(text) <= maxTokens) return { content: text, finish: "stop" };
  return { content: [...text].slice(0, maxTokens * CHARS_PER_TOKEN).join(""), finish: "length" };
}

const ERROR_KINDS: Record<number, { type: string; code: string }> = {
  400: { type: "invalid_request_error", code: "invalid_request" },
  401: { type: "invalid_request_error", code: "invalid_api_key" },
  404: { type: "invalid_request_error", code: "not_found" },
  405: { type: "invalid_request_error", code: "method_not_allowed" },
  413: { type: "invalid_request_error", code: "request_too_large" },
  429: { type: "requests", code: "rate_limit_exceeded" },
};

function errorBody(status: number, message: string): { error: { message: string; type: string; code: string } } {
  const kind = ERROR_KINDS[status] ?? (status >= 500 ? { type: "server_error", code: "server_error" } : { type: "invalid_request_error", code: `http_${status}` });
  return { error: { message, ...kind } };
}

class RequestError {
  constructor(
    readonly status: number,
    readonly message: string,
  ) {}
}

function contentText(content: unknown): string | undefined {
  if (typeof content === "string") return content;
  if (content === null) return "";
  if (Array.isArray(content)) {
    const parts = content.map((p) => (p && typeof p === "object" && (p as { type?: unknown }).type === "text" ? (p as { text?: unknown }).text : undefined));
    return parts.every((p) => typeof p === "string") ? parts.join("") : undefined;
  }
  return undefined;
}

function parseChatRequest(body: unknown): ChatRequest | RequestError {
  if (!body || typeof body !== "object" || Array.isArray(body)) return new RequestError(400, "the body must be a JSON object");
  const b = body as Record<string, unknown>;
  if (typeof b.model !== "string" || !b.model) return new RequestError(400, "model: a string is required");
  if (!Array.isArray(b.messages) || b.messages.length === 0) return new RequestError(400, "messages: a non-empty array is required");
  const messages: Message[] = [];
  for (const [i, m] of (b.messages as unknown[]).entries()) {
    const role = (m as { role?: unknown })?.role;
    const content = contentText((m as { content?: unknown })?.content);
    if (typeof role !== "string" || content === undefined) return new RequestError(400, `messages[${i}]: {role, content} with string content (or text parts) is required`);
    messages.push({ role, content });
  }
  const max = b.max_completion_tokens ?? b.max_tokens;
  if (max !== undefined && max !== null && !(Number.isInteger(max) && (max as number) >= 1)) return new RequestError(400, "max_tokens: a positive integer is required");
  if (b.seed !== undefined && b.seed !== null && !Number.isInteger(b.seed)) return new RequestError(400, "seed: an integer is required");
  const streamOptions = b.stream_options as { include_usage?: unknown } | undefined;
  return {
    model: b.model,
    messages,
    maxTokens: (max ?? undefined) as number | undefined,
    seed: (b.seed ?? undefined) as number | undefined,
    stream: b.stream === true,
    includeUsage: streamOptions?.include_usage === true,
  };
}

/** Markers `[[x-fake-NAME: VALUE]]` in a message: the same as the header of that name. */
const MARKER = /\[\[\s*(x-fake-[a-z-]+)\s*:\s*([^\]]*?)\s*\]\]/gi;

function faults(req: IncomingMessage, messages: readonly Message[]): Record<string, string> {
  const out: Record<string, string> = {};
  const last = [...messages].reverse().find((m) => m.role === "user")?.content ?? "";
  for (const m of last.matchAll(MARKER)) out[m[1]!.toLowerCase()] = m[2]!;
  for (const [k, v] of Object.entries(req.headers)) if (k.startsWith("x-fake-") && typeof v === "string") out[k] = v; // headers win
  return out;
}

const nonNegative = (s: string | undefined): number | undefined => (s !== undefined && /^\d+$/.test(s.trim()) ? Number(s) : undefined);

/** Starts the server on 127.0.0.1 and resolves once it listens. */
export async function startLocalLlmServer(options: LocalLlmOptions = {}): Promise<LocalLlmServer> {
  const serverSeed = options.seed ?? 0;
  const model = options.model ?? DEFAULT_MODEL;
  const failures = new Map<string, number>();
  const requests: LocalLlmServer["requests"] = [];
  const started = Math.floor(Date.now() / 1000);
  let counter = 0;

  const send = (req: IncomingMessage, res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    requests.push({ method: req.method ?? "", path: (req.url ?? "").split("?")[0]!, status });
    if (res.destroyed) return;
    res.writeHead(status, { "content-type": "application/json", "x-request-id": `req_local_${counter}`, ...headers });
    res.end(JSON.stringify(body));
  };
  const fail = (req: IncomingMessage, res: ServerResponse, status: number, message: string, headers?: Record<string, string>): void =>
    send(req, res, status, errorBody(status, message), headers);

  const readBody = async (req: IncomingMessage): Promise<string | RequestError> => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_BODY) return new RequestError(413, `the body is larger than ${MAX_BODY} bytes`);
      chunks.push(c);
    }
    return Buffer.concat(chunks).toString("utf8");
  };

  const chat = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const raw = await readBody(req);
    if (raw instanceof RequestError) return fail(req, res, raw.status, raw.message);
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch (err) {
      return fail(req, res, 400, `the body is not JSON: ${(err as Error).message}`);
    }
    const parsed = parseChatRequest(json);
    if (parsed instanceof RequestError) return fail(req, res, parsed.status, parsed.message);

    const f = faults(req, parsed.messages);
    const latency = nonNegative(f["x-fake-latency-ms"]);
    if (latency) {
      await sleep(latency);
      if (res.destroyed || req.socket.destroyed) {
        requests.push({ method: req.method ?? "", path: "/v1/chat/completions", status: 499 }); // the client gave up
        return;
      }
    }
    const failStatus = nonNegative(f["x-fake-fail"]);
    if (failStatus !== undefined && failStatus >= 400 && failStatus <= 599) {
      const key = f["x-fake-fail-key"] ?? `${failStatus}:${createHash("sha256").update(raw).digest("hex")}`;
      const timesRaw = f["x-fake-fail-times"]?.trim().toLowerCase();
      const times = timesRaw === "always" ? Infinity : (nonNegative(timesRaw) ?? 1);
      const done = failures.get(key) ?? 0;
      if (done < times) {
        failures.set(key, done + 1);
        const headers: Record<string, string> = {};
        const retryMs = nonNegative(f["x-fake-retry-after-ms"]) ?? (failStatus === 429 || failStatus === 503 ? 1000 : undefined);
        if (retryMs !== undefined) {
          headers["retry-after"] = String(Math.ceil(retryMs / 1000));
          headers["retry-after-ms"] = String(retryMs);
        }
        return fail(req, res, failStatus, `injected failure ${done + 1} of ${times === Infinity ? "always" : times} (x-fake-fail: ${failStatus}, key ${key})`, headers);
      }
    }

    const messages = parsed.messages.map((m) => ({ role: m.role, content: m.content.replace(MARKER, "").trim() }));
    const seed = parsed.seed ?? serverSeed;
    const { content, finish } = truncate(answer(messages, seed), parsed.maxTokens);
    const usage = { prompt_tokens: promptTokens(messages), completion_tokens: estimateTokens(content), total_tokens: 0 };
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    const id = `chatcmpl-local-${++counter}`;
    const created = Math.floor(Date.now() / 1000);
    const fingerprint = `fp_local_${seed}`;

    if (!parsed.stream) {
      return send(req, res, 200, {
        id,
        object: "chat.completion",
        created,
        model: parsed.model,
        system_fingerprint: fingerprint,
        choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, logprobs: null, finish_reason: finish }],
        usage,
      });
    }
    requests.push({ method: req.method ?? "", path: "/v1/chat/completions", status: 200 });
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-request-id": `req_local_${counter}` });
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}): string =>
      `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: parsed.model, system_fingerprint: fingerprint, choices, ...(parsed.includeUsage ? { usage: null } : {}), ...extra })}\n\n`;
    res.write(chunk([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]));
    const points = [...content];
    for (let i = 0; i < points.length; i += 3 * CHARS_PER_TOKEN) {
      res.write(chunk([{ index: 0, delta: { content: points.slice(i, i + 3 * CHARS_PER_TOKEN).join("") }, logprobs: null, finish_reason: null }]));
    }
    res.write(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }]));
    if (parsed.includeUsage) res.write(chunk([], { usage }));
    res.end("data: [DONE]\n\n");
  };

  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0]!;
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return fail(req, res, 401, req.headers.authorization ? "Incorrect API key provided" : "No API key provided (Authorization: Bearer <key>)");
    }
    if (path === "/v1/chat/completions") {
      if (req.method !== "POST") return fail(req, res, 405, `${req.method} ${path}: use POST`, { allow: "POST" });
      chat(req, res).catch((err: unknown) => fail(req, res, 500, `the local server failed: ${(err as Error).message}`));
      return;
    }
    const entry = { id: model, object: "model", created: started, owned_by: "syntropism" };
    if (path === "/v1/models" && req.method === "GET") return send(req, res, 200, { object: "list", data: [entry] });
    if (path === `/v1/models/${model}` && req.method === "GET") return send(req, res, 200, entry);
    return fail(req, res, 404, `${req.method} ${path}: no such endpoint (POST /v1/chat/completions, GET /v1/models)`);
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
