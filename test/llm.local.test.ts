import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI from "openai";
import { startLocalLlmServer, type LocalLlmServer } from "../llm/localServer.ts";
import { BUNDLES } from "../llm/policy.ts";

// The local OpenAI-compatible server, over real HTTP, with OpenAI's own SDK as the client: what a
// completion, a stream and usage look like to it, the seed's determinism, injected failures that
// the SDK retries or gives up on, the API key, and the genesis agent's decisions.

const PRICES = { cpu: 0.001, memory: 0.0005, tokens: 0.00001, attention: 1 };
const stateOf = (credits: number, extra: Record<string, unknown> = {}) => ({
  agent_id: "alice", execution_id: "7", window_id: 882070051, window_end: "2026-12-04T08:31:02.000Z",
  credits, prices: PRICES, limits: { memoryMiB: 128, cpuMillicores: 500, pids: 64 }, ...extra,
});

describe("local LLM server", () => {
  let server: LocalLlmServer;
  let client: OpenAI;
  before(async () => {
    server = await startLocalLlmServer({ seed: 7 });
    client = new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 0 });
  });
  after(() => server.close());

  const ask = (content: string, extra: Record<string, unknown> = {}) =>
    client.chat.completions.create({ model: "syntropism-local", messages: [{ role: "user", content }], ...extra });

  it("lists its model and answers a completion with usage", async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["syntropism-local"]);
    const r = await ask("What happens at the end of a window?");
    assert.equal(r.object, "chat.completion");
    assert.equal(r.model, "syntropism-local");
    assert.equal(r.choices[0]!.message.role, "assistant");
    assert.equal(r.choices[0]!.finish_reason, "stop");
    const content = r.choices[0]!.message.content!;
    assert.match(content, /What happens at the end of a window\?/);
    assert.equal(r.usage!.completion_tokens, Math.ceil([...content].length / 4));
    assert.equal(r.usage!.prompt_tokens, Math.ceil("What happens at the end of a window?".length / 4) + 3);
    assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });

  it("max_tokens cuts the completion: finish_reason length", async () => {
    const full = await ask("Tell me about credits");
    assert.ok(full.usage!.completion_tokens > 5);
    const cut = await ask("Tell me about credits", { max_tokens: 5 });
    assert.equal(cut.choices[0]!.finish_reason, "length");
    assert.ok(cut.usage!.completion_tokens <= 5);
    assert.ok(full.choices[0]!.message.content!.startsWith(cut.choices[0]!.message.content!));
  });

  it("a stream reassembles to the same content, with usage in its last chunk", async () => {
    const whole = await ask("Explain bundles", { seed: 11 });
    const stream = await client.chat.completions.create({
      model: "syntropism-local", messages: [{ role: "user", content: "Explain bundles" }], seed: 11, stream: true, stream_options: { include_usage: true },
    });
    let text = "";
    let chunks = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      chunks++;
      text += c.choices[0]?.delta.content ?? "";
      finish = c.choices[0]?.finish_reason ?? finish;
      if (c.usage) usage = c.usage;
    }
    assert.ok(chunks > 3);
    assert.equal(text, whole.choices[0]!.message.content);
    assert.equal(finish, "stop");
    assert.deepEqual(usage, whole.usage);
  });

  it("is deterministic for a seed, and the seed matters", async () => {
    const prompt = "Which resource should I buy?";
    const a = await ask(prompt, { seed: 1 });
    const b = await ask(prompt, { seed: 1 });
    assert.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
    const others = await Promise.all([2, 3, 4, 5].map((seed) => ask(prompt, { seed })));
    assert.ok(others.some((o) => o.choices[0]!.message.content !== a.choices[0]!.message.content));
    // without a seed, the server's: another server with the same seed answers the same
    const twin = await startLocalLlmServer({ seed: 7 });
    try {
      const t = await new OpenAI({ baseURL: twin.baseURL, apiKey: "x" }).chat.completions.create({ model: "m", messages: [{ role: "user", content: prompt }] });
      assert.equal(t.choices[0]!.message.content, (await ask(prompt, { model: "m" })).choices[0]!.message.content);
    } finally {
      await twin.close();
    }
  });

  it("429 twice, then success: the SDK retries after retry-after", async () => {
    const before = server.requests.length;
    const retrying = new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 2 });
    const r = await retrying.chat.completions.create(
      { model: "syntropism-local", messages: [{ role: "user", content: "retry me" }] },
      { headers: { "x-fake-fail": "429", "x-fake-fail-times": "2", "x-fake-fail-key": "t429", "x-fake-retry-after-ms": "50" } },
    );
    assert.equal(r.choices[0]!.finish_reason, "stop");
    assert.deepEqual(server.requests.slice(before).map((q) => q.status), [429, 429, 200]);
    // without retries the SDK surfaces the 429 in OpenAI's error shape, retry-after included
    await assert.rejects(
      client.chat.completions.create(
        { model: "syntropism-local", messages: [{ role: "user", content: "no retries" }] },
        { headers: { "x-fake-fail": "429", "x-fake-fail-key": "t429b" } },
      ),
      (err: unknown) => {
        assert.ok(err instanceof OpenAI.RateLimitError);
        assert.equal(err.status, 429);
        assert.equal(err.code, "rate_limit_exceeded");
        assert.equal(err.type, "requests");
        assert.equal(err.headers?.get("retry-after"), "1");
        return true;
      },
    );
  });

  it("500: an InternalServerError without retries; with retries the next attempt succeeds", async () => {
    const headers = { "x-fake-fail": "500", "x-fake-fail-key": "t500", "x-fake-retry-after-ms": "20" };
    await assert.rejects(
      client.chat.completions.create({ model: "syntropism-local", messages: [{ role: "user", content: "boom" }] }, { headers }),
      (err: unknown) => err instanceof OpenAI.InternalServerError && err.status === 500 && err.type === "server_error",
    );
    // the key has used up its one failure: a marker in the message with a fresh key fails once more, then the retry passes
    const before = server.requests.length;
    const r = await new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 1 }).chat.completions.create({
      model: "syntropism-local", messages: [{ role: "user", content: "boom [[x-fake-fail: 500]] [[x-fake-fail-key: m500]] [[x-fake-retry-after-ms: 20]]" }],
    });
    assert.doesNotMatch(r.choices[0]!.message.content!, /x-fake/);
    assert.deepEqual(server.requests.slice(before).map((q) => q.status), [500, 200]);
  });

  it("latency longer than the client's timeout: a timeout error", async () => {
    const started = Date.now();
    await assert.rejects(
      client.chat.completions.create({ model: "syntropism-local", messages: [{ role: "user", content: "slow" }] }, { headers: { "x-fake-latency-ms": "1500" }, timeout: 300 }),
      (err: unknown) => err instanceof OpenAI.APIConnectionTimeoutError,
    );
    assert.ok(Date.now() - started < 1400, "the client gave up before the server answered");
    await sleep(1500 - (Date.now() - started) + 200);
    assert.equal(server.requests.at(-1)!.status, 499, "the server saw the client leave");
    const ok = await client.chat.completions.create({ model: "syntropism-local", messages: [{ role: "user", content: "slow" }] }, { headers: { "x-fake-latency-ms": "200" }, timeout: 2000 });
    assert.equal(ok.choices[0]!.finish_reason, "stop");
  });

  it("with an API key configured, a wrong key gets 401", async () => {
    const locked = await startLocalLlmServer({ apiKey: "sk-local-right" });
    try {
      await assert.rejects(
        new OpenAI({ baseURL: locked.baseURL, apiKey: "sk-wrong", maxRetries: 0 }).models.list(),
        (err: unknown) => err instanceof OpenAI.AuthenticationError && err.status === 401 && err.code === "invalid_api_key",
      );
      const r = await new OpenAI({ baseURL: locked.baseURL, apiKey: "sk-local-right" }).chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }] });
      assert.equal(r.choices[0]!.finish_reason, "stop");
    } finally {
      await locked.close();
    }
  });

  it("a malformed request is a 400 in OpenAI's error shape", async () => {
    const res = await fetch(`${server.baseURL}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "m", messages: [] }) });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: { message: string; type: string; code: string } };
    assert.equal(body.error.type, "invalid_request_error");
    assert.match(body.error.message, /messages/);
  });

  it("npm run llm -- serve: prints the base URL, serves, stops on SIGTERM with 0; a bad command line exits 64", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "llm/cli.ts", "serve", "--seed", "7"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LLM_LOCAL_API_KEY: "sk-cli" } });
    try {
      const [line] = (await once(createInterface({ input: child.stdout! }), "line")) as [string];
      assert.match(line, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
      const r = await new OpenAI({ baseURL: line, apiKey: "sk-cli" }).chat.completions.create({ model: "m", messages: [{ role: "user", content: "Which resource should I buy?" }] });
      assert.equal(r.choices[0]!.message.content, (await ask("Which resource should I buy?", { model: "m" })).choices[0]!.message.content, "LLM_LOCAL_API_KEY and --seed 7 as the in-process server");
      assert.equal((await fetch(`${line}/models`)).status, 401);
    } finally {
      child.kill("SIGTERM");
    }
    assert.deepEqual(await once(child, "exit"), [0, null]);
    const bad = spawn(process.execPath, ["--import", "tsx", "llm/cli.ts", "serve", "--port", "x"], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    bad.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    assert.deepEqual(await once(bad, "exit"), [64, null]);
    assert.match(err, /usage: llm serve/);
  });

  describe("decisions for the genesis agent", () => {
    const decide = async (state: object, seed = 1) => {
      const r = await ask(`You are an agent in the Syntropism economy. Your state:\n${JSON.stringify(state)}\nWhat next?`, { seed });
      return JSON.parse(r.choices[0]!.message.content!) as { action: string; bundle?: { cpu: number; memory: number }; price?: number; reason: string };
    };

    it("enough credits: a bid the market accepts and the agent can pay", async () => {
      for (const credits of [3, 10, 97.5, 1000]) {
        const d = await decide(stateOf(credits, { goal: "summarise the news" }));
        assert.equal(d.action, "bid", JSON.stringify(d));
        const cost = d.bundle!.cpu * PRICES.cpu + d.bundle!.memory * PRICES.memory;
        assert.ok(d.price! >= cost, `price ${d.price} covers the cost ${cost}`);
        assert.ok(d.price! <= credits, `price ${d.price} within ${credits} credits`);
        assert.ok(BUNDLES.some((b) => b.cpu === d.bundle!.cpu && b.memory === d.bundle!.memory));
        assert.equal(Math.round(d.price! * 1e6) / 1e6, d.price, "six decimals at most");
      }
      const big = await decide(stateOf(1000));
      assert.deepEqual(big.bundle, BUNDLES.at(-1), "rich agents take the largest bundle");
    });

    it("too few credits: wait, with the reason", async () => {
      const d = await decide(stateOf(0.1));
      assert.equal(d.action, "wait");
      assert.match(d.reason, /smallest bundle/);
    });

    it("the same state and seed decide the same", async () => {
      assert.deepEqual(await decide(stateOf(50), 3), await decide(stateOf(50), 3));
    });
  });
});
