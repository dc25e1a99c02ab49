import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { headers as natsHeaders, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { jetstream } from "@nats-io/jetstream";
import { setTimeout as sleep } from "node:timers/promises";
import { loadConfigFile } from "../host/configFile.ts";
import { Subjects } from "../contract/subjects.ts";
import { listDeadLetters } from "../host/deadLetter.ts";
import { checkLedger } from "../economy/ledger.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { ROOT, readSubject, startHost, waitFor } from "./helpers/host.ts";
import { GatewayError, McpGateway } from "../gateway/client.ts";
import { parseGatewayConfig } from "../gateway/config.ts";

// The MCP gateway end to end: the project's functions in an in-process host, a real nats-server,
// real PostgreSQL, and the local web_search MCP server as a real child process over stdio
// (gateway/servers/webSearch.ts), which logs every tools/call it receives to a file.

/** Keeps every reply published on `filter`, by subject. */
function collectReplies(nc: NatsConnection, filter: string, into: Map<string, Reply[]>): Subscription {
  return nc.subscribe(filter, {
    callback: (_err, m) => {
      const list = into.get(m.subject) ?? [];
      list.push(m.json<Reply>());
      into.set(m.subject, list);
    },
  });
}

type Reply = { ok: boolean; request_id: string; cache_hit?: boolean; cost?: number; result?: { structuredContent?: { results: { id: string }[] } }; error?: { code: string; message: string } };

describe("MCP gateway", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  let lines: string[] = [];
  let dir: string;
  let callLog: string;
  let crashMarker: string;
  let sub: Subscription;
  const replies = new Map<string, Reply[]>();
  let n = 0;

  const calls = (query: string) =>
    existsSync(callLog) ? readFileSync(callLog, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { pid: number; query: string }).filter((c) => c.query === query) : [];
  const balance = async (agent: string) => (await nats.nc.request(`economic.balance.${agent}`, "", { timeout: 5000 })).json<{ balance: number }>().balance;
  const dead = () => listDeadLetters(nats.jsm, "DEAD_LETTERS", { prefix: "dlq", fn: "mcp/mcpWebSearch" });

  /** Publishes a request; returns the reply subject to wait on. */
  async function request(body: Record<string, unknown>, opts: { natsMsgId?: string; sender?: string } = {}): Promise<string> {
    const reply = (body.reply_subject as string | undefined) ?? `replies.${++n}`;
    const h = natsHeaders();
    h.set("Syntropism-Correlation-Id", "gateway-test");
    if (opts.natsMsgId) h.set("Nats-Msg-Id", opts.natsMsgId);
    const full = { server: "search", tool: "web_search", reply_subject: reply, ...body };
    await nats.js.publish(Subjects.mcpRequest(full.tool, opts.sender), JSON.stringify(full), { headers: h });
    return reply;
  }
  const replyOn = (subject: string, count = 1, timeoutMs = 20_000) =>
    waitFor(`reply on ${subject}`, () => ((replies.get(subject)?.length ?? 0) >= count ? replies.get(subject)! : undefined), timeoutMs).catch((err) => {
      throw new Error(`${(err as Error).message}\n${lines.slice(-30).join("\n")}`);
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "gateway-test-"));
    hooks.after(async () => rmSync(dir, { recursive: true, force: true }));
    callLog = join(dir, "calls.jsonl");
    crashMarker = join(dir, "crashed");
    const config = {
      servers: {
        search: {
          type: "stdio",
          command: "node",
          args: ["--import", "tsx", "gateway/servers/webSearch.ts"],
          env: { WEB_SEARCH_CALL_LOG: callLog, WEB_SEARCH_CRASH_ONCE: crashMarker },
          tools: { web_search: { cost: 0.01, cache_ttl_ms: 60_000 } },
        },
      },
    };
    writeFileSync(join(dir, "servers.json"), JSON.stringify(config));
    process.env.MCP_GATEWAY_CONFIG = join(dir, "servers.json");
    process.env.MCP_DEFAULT_MAX_CALLS_PER_HOUR = "100";
    nats = await startTestNats(hooks, { auth: true });
    db = await startTestDatabase(hooks);
    process.env.DATABASE_URL = db.url;
    sub = collectReplies(nats.nc, "replies.>", replies);
    hooks.after(async () => sub.unsubscribe());
    const streams = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
    ({ lines } = await startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config: streams }));
    for (const [agent, credits] of [["alice", 100], ["bob", 100], ["carol", 100], ["poor", 0.005]] as const) await nats.js.publish("admin.genesis", JSON.stringify({ agent_id: agent, credits }));
    // genesis commands are handled several at once: wait for each
    await waitFor("agents funded", async () => {
      for (const [a, c] of [["alice", 100], ["bob", 100], ["carol", 100], ["poor", 0.005]] as const) if ((await balance(a).catch(() => null)) !== c) return undefined;
      return true;
    });
  });

  it("round trip: an agent searches, gets results on its reply subject, is charged, the event is audited", async () => {
    const t0 = Date.now();
    const subject = await request({ agent_id: "alice", params: { query: "nats key value compare and swap" }, msg_id: "rt-1" });
    const [r] = await replyOn(subject);
    assert.equal(r!.ok, true, JSON.stringify(r));
    assert.equal(r!.cache_hit, false);
    assert.equal(r!.result!.structuredContent!.results[0]!.id, "nats-kv");
    assert.equal(await balance("alice"), 99.99);
    const ev = await waitFor("mcp_completed", async () => (await readSubject(nats.jsm, "AUDIT", "mcp.completed")).map((m) => m.json<{ payload: Record<string, unknown>; correlation_id: string }>()).find((e) => e.payload.request_id === "rt-1"));
    assert.deepEqual([ev.payload.outcome, ev.payload.cost, ev.payload.cache_hit, ev.correlation_id], ["ok", 0.01, false, "gateway-test"]);
    assert.ok(typeof ev.payload.duration_ms === "number");
    console.log(`round trip (first call starts the server): ${Date.now() - t0} ms`);
  });

  it("the same request delivered twice is charged once", async () => {
    const before = await balance("bob");
    const subject = await request({ agent_id: "bob", params: { query: "double entry ledger" }, msg_id: "dup-1" }, { natsMsgId: "a" });
    await request({ agent_id: "bob", params: { query: "double entry ledger" }, msg_id: "dup-1", reply_subject: subject }, { natsMsgId: "b" });
    const rs = await replyOn(subject, 2);
    assert.ok(rs.every((r) => r.ok));
    const [{ count }] = (await db.sql`SELECT count(*)::int AS count FROM ledger_transactions WHERE source_msg_id = 'mcp:dup-1'`) as unknown as [{ count: number }];
    assert.equal(count, 1);
    assert.equal(Math.round((before - (await balance("bob"))) * 1e6), 10_000);
  });

  it("an identical request is answered from the KV cache without calling the server", async () => {
    const q = "exponential backoff jitter";
    const s1 = await request({ agent_id: "alice", params: { query: q }, msg_id: "cache-1" });
    const [r1] = await replyOn(s1);
    const s2 = await request({ agent_id: "alice", params: { query: q }, msg_id: "cache-2" });
    const [r2] = await replyOn(s2);
    assert.equal(r1!.cache_hit, false);
    assert.equal(r2!.cache_hit, true);
    assert.deepEqual(r2!.result, r1!.result);
    assert.equal(calls(q).length, 1, "the server saw one call");
    assert.equal(r2!.cost, 0.01, "a hit is charged like a call");
  });

  it("an agent over its hourly quota gets QUOTA_EXCEEDED, is not charged, nothing is retried", async () => {
    await (await new Kvm(nats.nc).open("mcp_quotas")).put("carol", JSON.stringify({ max_mcp_calls_per_hour: 2 }));
    const out: Reply[] = [];
    for (let i = 0; i < 3; i++) out.push((await replyOn(await request({ agent_id: "carol", params: { query: `quota ${i}` }, msg_id: `q-${i}` })))[0]!);
    assert.deepEqual(out.map((r) => r.ok), [true, true, false]);
    assert.equal(out[2]!.error!.code, "QUOTA_EXCEEDED");
    assert.equal(await balance("carol"), 99.98);
    assert.equal((await dead()).filter((d) => d.msgId.includes("q-")).length, 0);
  });

  it("insufficient funds: an error reply, nothing called", async () => {
    const q = "agent token economy budget";
    const [r] = await replyOn(await request({ agent_id: "poor", params: { query: q }, msg_id: "poor-1" }));
    assert.equal(r!.error!.code, "INSUFFICIENT_FUNDS");
    assert.equal(calls(q).length, 0);
    assert.equal(await balance("poor"), 0.005);
  });

  it("unknown tool and invalid params: error reply and dead letter, not charged; a malformed request is dead-lettered", async () => {
    const before = await balance("alice");
    const [a] = await replyOn(await request({ agent_id: "alice", tool: "no_such_tool", params: {}, msg_id: "bad-tool" }));
    assert.equal(a!.error!.code, "UNKNOWN_TOOL");
    const [b] = await replyOn(await request({ agent_id: "alice", params: { query: 42 }, msg_id: "bad-params" }));
    assert.equal(b!.error!.code, "INVALID_PARAMS");
    await nats.js.publish(Subjects.mcpRequest("web_search"), JSON.stringify({ agent_id: "alice", tool: "web_search" }));
    const dl = await waitFor("three dead letters", async () => {
      const all = await dead();
      return all.length >= 3 ? all : undefined;
    });
    const codes = dl.map((d) => d.error?.code ?? d.reason).sort();
    assert.ok(codes.includes("UNKNOWN_TOOL") && codes.includes("INVALID_PARAMS"), codes.join(","));
    assert.ok(dl.some((d) => d.reason === "HOST_ERR_INVALID_PAYLOAD"), dl.map((d) => d.reason).join(","));
    assert.equal(await balance("alice"), before);
  });

  it("an agent with its own credentials asks on mcp.request.<tool>.<its id>, gets the result in its inbox, and pays", async () => {
    const before = await balance("alice");
    const alice = await nats.auth!.connect({ agent: "alice" });
    const got = new Promise<Reply>((r) => alice.subscribe("agent.alice.inbox.>", { max: 1, callback: (_e, m) => r(m.json<Reply>()) }));
    await alice.flush();
    const body = { agent_id: "alice", server: "search", tool: "web_search", params: { query: "per agent credentials" }, msg_id: "sender-ok", reply_subject: "agent.alice.inbox.mcp" };
    const ack = await jetstream(alice).publish(Subjects.mcpRequest("web_search", "alice"), JSON.stringify(body));
    assert.equal(ack.stream, "MCP", "stored, and the acknowledgement came back to the agent");
    const r = await Promise.race([got, sleep(20_000).then(() => undefined)]);
    assert.equal(r?.ok, true, JSON.stringify(r));
    assert.equal(Math.round((before - (await balance("alice"))) * 1e6), 10_000);
  });

  it("an agent cannot have its results published where it chooses: a reply_subject outside its inbox is refused", async () => {
    const alice = await nats.auth!.connect({ agent: "alice" });
    const body = { agent_id: "alice", server: "search", tool: "web_search", params: { query: "deputy" }, msg_id: "deputy-1", reply_subject: "$JS.API.STREAM.DELETE.AUDIT" };
    await jetstream(alice).publish(Subjects.mcpRequest("web_search", "alice"), JSON.stringify(body), { msgID: "deputy-1" });
    const dl = await waitFor("dead letter", async () => (await dead()).find((d) => d.msgId === "deputy-1"));
    assert.equal(dl.reason, "INVALID_ARGUMENT");
    assert.match(dl.error?.message ?? "", /reply_subject \$JS\.API\.STREAM\.DELETE\.AUDIT is not agent alice's/);
    assert.equal((await nats.jsm.streams.info("AUDIT")).config.name, "AUDIT");
    assert.equal(calls("deputy").length, 0);
  });

  it("a request whose subject's agent is not its body's is refused at once (IDENTITY_MISMATCH): no reply, not charged, not called", async () => {
    const q = "spend someone else's credits";
    const [before, beforeBob] = [await balance("alice"), await balance("bob")];
    const subject = await request({ agent_id: "alice", params: { query: q }, msg_id: "impostor-1" }, { natsMsgId: "impostor-1", sender: "bob" });
    const dl = await waitFor("dead letter", async () => (await dead()).find((d) => d.msgId === "impostor-1"));
    assert.equal(dl.reason, "IDENTITY_MISMATCH");
    assert.equal(dl.attempts, 1, "refused at once, not retried");
    assert.match(dl.error?.message ?? "", /mcp\.request\.web_search\.bob is agent bob's request but its agent_id is alice/);
    assert.deepEqual([await balance("alice"), await balance("bob")], [before, beforeBob]);
    assert.equal(calls(q).length, 0);
    assert.equal(replies.get(subject), undefined, "no reply");
    const [{ count }] = (await db.sql`SELECT count(*)::int AS count FROM ledger_transactions WHERE source_msg_id = 'mcp:impostor-1'`) as unknown as [{ count: number }];
    assert.equal(count, 0);
  });

  it("a call that times out is retried with backoff, charged once, then answered with TIMEOUT and dead-lettered", async () => {
    const before = await balance("bob");
    const t0 = Date.now();
    const [r] = await replyOn(await request({ agent_id: "bob", params: { query: "slow search", delay_ms: 3000 }, timeout_ms: 200, msg_id: "slow-1" }), 1, 30_000);
    assert.equal(r!.error!.code, "TIMEOUT");
    assert.equal(calls("slow search").length, 3, "three attempts");
    const dl = await waitFor("dead letter", async () => (await dead()).find((d) => d.reason === "HOST_ERR_MAX_DELIVERIES"));
    assert.equal(dl.error?.code, "TIMEOUT");
    assert.equal(dl.attempts, 3);
    assert.equal(Math.round((before - (await balance("bob"))) * 1e6), 10_000, "charged once for three attempts");
    console.log(`timeout → 3 attempts → error reply: ${Date.now() - t0} ms`);
  });

  it("a server that crashes during a call is restarted; the retry and the next call work", async () => {
    const before = await balance("alice");
    const t0 = Date.now();
    const [r] = await replyOn(await request({ agent_id: "alice", params: { query: "circuit breaker", crash: true }, msg_id: "crash-1" }), 1, 30_000);
    assert.equal(r!.ok, true, JSON.stringify(r));
    const seen = calls("circuit breaker");
    assert.equal(seen.length, 2);
    assert.notEqual(seen[0]!.pid, seen[1]!.pid, "a new server process answered");
    const [next] = await replyOn(await request({ agent_id: "alice", params: { query: "dead letter queues" }, msg_id: "after-crash" }));
    assert.equal(next!.ok, true);
    assert.equal(Math.round((before - (await balance("alice"))) * 1e6), 20_000);
    console.log(`crash → restart → answer: ${Date.now() - t0} ms`);
    const check = await checkLedger(db.sql);
    assert.equal(check.ok, true);
  });
});

/**
 * Starts gateway/servers/webSearch.ts over Streamable HTTP (`--http 0`: a free loopback port) as a
 * real child process; resolves with the URL it prints once bound. Stopped (SIGTERM) in `hooks.after`.
 */
async function startHttpWebSearch(hooks: { after: (fn: () => Promise<void>) => void }, env: Record<string, string>): Promise<{ url: string; pid: number; stderr: () => string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "gateway/servers/webSearch.ts", "--http", "0"], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  hooks.after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (c: Buffer) => (err += c.toString("utf8")));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`web_search --http printed no URL within 20 s\n${out}\n${err}`)), 20_000);
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString("utf8");
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      fail(new Error(`web_search --http exited (${code ?? signal}) before listening\n${err}`));
    });
  });
  return { url, pid: child.pid!, stderr: () => err };
}

// The same local web_search server, but as a Streamable HTTP server (`--http PORT`) on a loopback
// port, reached by the gateway's StreamableHTTPClientTransport: directly through McpGateway, and
// once end to end through functions/mcp/mcpWebSearch.ts (real nats-server, PostgreSQL, host).

// the suite above points DATABASE_URL at its own (by now dropped) database; the test database
// helper takes DATABASE_URL as its admin URL, so this suite puts back what the run started with
const STARTING_DATABASE_URL = process.env.DATABASE_URL;

describe("MCP gateway over Streamable HTTP", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let lines: string[] = [];
  let dir: string;
  let callLog: string;
  let configPath: string;
  let server: { url: string; pid: number; stderr: () => string };
  const replies = new Map<string, Reply[]>();

  const calls = (query: string) =>
    existsSync(callLog) ? readFileSync(callLog, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { pid: number; query: string }).filter((c) => c.query === query) : [];
  const balance = async (agent: string) => (await nats.nc.request(`economic.balance.${agent}`, "", { timeout: 5000 })).json<{ balance: number }>().balance;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "gateway-http-test-"));
    hooks.after(async () => rmSync(dir, { recursive: true, force: true }));
    callLog = join(dir, "calls.jsonl");
    server = await startHttpWebSearch(hooks, { WEB_SEARCH_CALL_LOG: callLog });
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/mcp$/);
    const config = { servers: { web: { type: "http", url: server.url, tools: { web_search: { cost: 0.02, cache_ttl_ms: 60_000 } } } } };
    configPath = join(dir, "servers.json");
    writeFileSync(configPath, JSON.stringify(config));
    process.env.MCP_GATEWAY_CONFIG = configPath;
    process.env.MCP_DEFAULT_MAX_CALLS_PER_HOUR = "100";
    nats = await startTestNats(hooks);
    if (STARTING_DATABASE_URL === undefined) delete process.env.DATABASE_URL;
    else process.env.DATABASE_URL = STARTING_DATABASE_URL;
    const db = await startTestDatabase(hooks);
    process.env.DATABASE_URL = db.url;
    const sub = collectReplies(nats.nc, "replies.http.>", replies);
    hooks.after(async () => sub.unsubscribe());
    const streams = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
    ({ lines } = await startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config: streams }));
    await nats.js.publish("admin.genesis", JSON.stringify({ agent_id: "dora", credits: 1 }));
    await waitFor("dora funded", async () => ((await balance("dora").catch(() => null)) === 1 ? true : undefined));
  });

  it("McpGateway lists the server's tools and calls web_search over HTTP; bad params and timeouts are classified", async () => {
    const gw = new McpGateway(parseGatewayConfig(JSON.parse(readFileSync(configPath, "utf8")), ROOT));
    try {
      const listed = await gw.listAll();
      assert.equal(listed.length, 1);
      assert.equal(listed[0]!.error, undefined, listed[0]!.error);
      const tool = listed[0]!.tools!.find((t) => t.name === "web_search");
      assert.ok(tool, JSON.stringify(listed));
      assert.deepEqual(tool.inputSchema.required, ["query"]);
      assert.deepEqual(Object.keys(tool.inputSchema.properties ?? {}).sort(), ["crash", "delay_ms", "limit", "query"]);

      const q = "nats key value compare and swap";
      const r = await gw.call("web", "web_search", { query: q, limit: 3 });
      assert.notEqual(r.isError, true, JSON.stringify(r));
      const { results } = r.structuredContent as { results: { id: string }[] };
      assert.equal(results[0]!.id, "nats-kv");
      assert.ok(results.length <= 3);
      assert.deepEqual(calls(q).map((c) => c.pid), [server.pid], "the HTTP server process answered, once");

      await assert.rejects(gw.call("web", "web_search", { query: 42 }), (e: unknown) => e instanceof GatewayError && e.code === "INVALID_PARAMS");
      await assert.rejects(gw.call("web", "web_search", { query: "slow over http", delay_ms: 3000 }, { timeoutMs: 200 }), (e: unknown) => e instanceof GatewayError && e.code === "TIMEOUT" && e.transient);
      // stateless server: no session to lose; the same client goes on working after a timeout
      const again = await gw.call("web", "web_search", { query: "double entry ledger", limit: 1 });
      assert.equal((again.structuredContent as { results: unknown[] }).results.length, 1);
    } finally {
      await gw.close();
    }
  });

  it("round trip through mcpWebSearch: the agent is charged, the HTTP server answers, the event is audited", async () => {
    const q = "exponential backoff jitter";
    const subject = "replies.http.rt";
    const h = natsHeaders();
    h.set("Syntropism-Correlation-Id", "gateway-http-test");
    await nats.js.publish(
      Subjects.mcpRequest("web_search"),
      JSON.stringify({ agent_id: "dora", server: "web", tool: "web_search", params: { query: q }, reply_subject: subject, msg_id: "http-rt-1" }),
      { headers: h },
    );
    const [r] = await waitFor(`reply on ${subject}`, () => replies.get(subject)).catch((err) => {
      throw new Error(`${(err as Error).message}\n${lines.slice(-30).join("\n")}\n${server.stderr()}`);
    });
    assert.equal(r!.ok, true, JSON.stringify(r));
    assert.equal(r!.cache_hit, false);
    assert.equal(r!.cost, 0.02);
    assert.ok(r!.result!.structuredContent!.results.length > 0, JSON.stringify(r));
    assert.deepEqual(calls(q).map((c) => c.pid), [server.pid]);
    assert.equal(await balance("dora"), 0.98);
    const ev = await waitFor("mcp_completed", async () => (await readSubject(nats.jsm, "AUDIT", "mcp.completed")).map((m) => m.json<{ payload: Record<string, unknown>; correlation_id: string }>()).find((e) => e.payload.request_id === "http-rt-1"));
    assert.deepEqual([ev.payload.server, ev.payload.outcome, ev.payload.cost, ev.correlation_id], ["web", "ok", 0.02, "gateway-http-test"]);
  });
});

describe("MCP gateway: a server's tool list changes", () => {
  it("lists the tools again when the server announces a change", async () => {
    const gw = new McpGateway(
      parseGatewayConfig({ servers: { changing: { type: "stdio", command: "node", args: ["--import", "tsx", "test/fixtures/mcp/changingTools.ts"] } } }, ROOT),
    );
    try {
      assert.deepEqual((await gw.tools("changing")).map((t) => t.name), ["add_tool"]);
      await gw.call("changing", "add_tool", {});
      const names = await waitFor("the new tool listed", async () => {
        const n = (await gw.tools("changing")).map((t) => t.name).sort();
        return n.includes("extra") ? n : undefined;
      }, 10_000);
      assert.deepEqual(names, ["add_tool", "extra"]);
      const r = await gw.call("changing", "extra", { x: 21 });
      assert.equal((r.content[0] as { text: string }).text, "42");
    } finally {
      await gw.close();
    }
  });
});
