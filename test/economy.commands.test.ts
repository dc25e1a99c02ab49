import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadConfigFile } from "../host/configFile.ts";
import { listDeadLetters, type DeadLetter } from "../host/deadLetter.ts";
import { loadSettings } from "../config/settings.ts";
import { Subjects } from "../contract/subjects.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { ROOT, startHost, waitFor } from "./helpers/host.ts";

// Every economy command, refused the way a new user's first mistakes are refused: at once, on the
// first attempt, dead-lettered under the refusal's own code with a message in credits — never
// retried into HOST_ERR_MAX_DELIVERIES — and free text past its limit refused before anything is
// written. Also: open prompts can be listed, market.prices answers with the market and the window,
// and execute_trade answers in snake_case. The host is
// given its settings (no process.env passed between components).

const enc = (v: unknown) => JSON.stringify(v);

describe("economy commands refuse at once, with their code", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  let n = 0;

  before(async () => {
    nats = await startTestNats(hooks, { auth: true });
    db = await startTestDatabase(hooks);
    const config = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
    const settings = loadSettings({ AGENT_WORKSPACES: process.env.AGENT_WORKSPACES, DATABASE_URL: db.url, ECONOMY_WINDOW_MS: "500", LOG_LEVEL: "error" });
    await startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config, settings });
    for (const agent of ["cma", "cmb"]) await nats.js.publish("admin.genesis", enc({ agent_id: agent, credits: 100 }));
    // genesis commands are handled several at once: wait for each
    const funded = async (a: string) => (await nats.nc.request(`economic.balance.${a}`, "", { timeout: 5000 })).json<{ balance?: number }>().balance === 100;
    await waitFor("agents funded", async () => ((await funded("cma")) && (await funded("cmb")) ? true : undefined));
  });

  /** Publishes a command with its own msg id and waits for its dead letter. */
  async function refused(subject: string, body: unknown): Promise<DeadLetter> {
    const msgId = `cmd-${++n}`;
    await nats.js.publish(subject, typeof body === "string" ? body : enc(body), { msgID: msgId });
    return waitFor(`${subject} dead-lettered`, async () => (await listDeadLetters(nats.jsm, "DEAD_LETTERS", { prefix: "dlq" })).find((d) => d.msgId === msgId), 20_000, 50);
  }

  const cases: [string, string, unknown, string, RegExp][] = [
    ["genesis finer than a micro-credit", "admin.genesis", { agent_id: "tiny", credits: 0.0000001 }, "INVALID_AMOUNT", /finer than one micro-credit/],
    ["genesis of an agent that exists", "admin.genesis", { agent_id: "cma", credits: 1 }, "AGENT_EXISTS", /cma already exists/],
    ["transfer beyond the balance", "economic.transfer.cma", { to: "cmb", amount: 500 }, "INSUFFICIENT_FUNDS", /100 credits available .* 500 requested/],
    ["transfer to nobody", "economic.transfer.cma", { to: "nobody-here", amount: 1 }, "UNKNOWN_AGENT", /nobody-here/],
    ["transfer of a sub-micro amount", "economic.transfer.cma", { to: "cmb", amount: 0.0000001 }, "INVALID_AMOUNT", /finer than one micro-credit/],
    ["spawn of an agent that exists", "economic.spawn.cma", { child_id: "cmb", credits: 1 }, "AGENT_EXISTS", /cmb already exists/],
    ["spawn beyond the balance", "economic.spawn.cma", { child_id: "cmc", credits: 1000 }, "INSUFFICIENT_FUNDS", /requested/],
    ["reward answering someone else's prompt", "admin.reward.grant", { agent_id: "cma", amount: 1, prompt_id: "999999" }, "UNKNOWN_PROMPT", /999999/],
    ["reward with a prompt id that is no id", "admin.reward.grant", { agent_id: "cma", amount: 1, prompt_id: "not-a-number" }, "UNKNOWN_PROMPT", /not-a-number/],
    ["prompt of an unknown agent", "agent.ghost.prompt", { question: "hello?" }, "UNKNOWN_AGENT", /ghost/],
    ["message to an unknown agent", "agent.cma.message", { to: "ghost", body: "hi" }, "UNKNOWN_AGENT", /ghost/],
    ["bid below the market price", "market.bid.cma", { resource: "cpu", quantity: 1, price: 0.00001 }, "BELOW_MARKET_PRICE", /below the market price/],
    ["genesis from a template that does not exist", "admin.genesis", { agent_id: "tmpl", credits: 1, template: "nope" }, "UNKNOWN_TEMPLATE", /no workspace template nope/],
    ["spawn from a template that does not exist", "economic.spawn.cma", { child_id: "tmplc", credits: 1, template: "nope" }, "UNKNOWN_TEMPLATE", /no workspace template nope/],
    ["bid beyond the balance", "market.bid.cma", { resource: "attention", quantity: 1, price: 500 }, "INSUFFICIENT_FUNDS", /bid of 500 credits; 100 available/],
  ];
  for (const [what, subject, body, code, message] of cases) {
    it(`${what}: ${code}, first attempt`, async () => {
      const d = await refused(subject, body);
      assert.equal(d.reason, code);
      assert.equal(d.attempts, 1, "refused at once, not retried");
      assert.match(d.error?.message ?? "", message);
      assert.doesNotMatch(d.error?.message ?? "", /micro-credits/, "amounts are stated in credits");
    });
  }

  it("genesis and spawn make the agent's workspace from its template, and record it", async () => {
    const root = process.env.AGENT_WORKSPACES!;
    assert.ok(existsSync(join(root, "cma", "README.md")), "the default template was copied");
    await nats.js.publish("economic.spawn.cma", enc({ child_id: "cmkid", credits: 1 }));
    await waitFor("the child's workspace", async () => (existsSync(join(root, "cmkid", "README.md")) ? true : undefined));
    const rows = await db.sql<{ agent_id: string; path: string; template: string }[]>`SELECT agent_id, path, template FROM workspaces WHERE agent_id IN ('cma', 'cmkid') ORDER BY agent_id`;
    assert.deepEqual(rows.map((r) => [r.agent_id, r.path, r.template]), [["cma", "cma", "default"], ["cmkid", "cmkid", "default"]]);
  });

  it("free text past its limit, or with NUL, is refused before anything is written", async () => {
    const memo = await refused("economic.transfer.cma", { to: "cmb", amount: 1, memo: "x".repeat(900_000) });
    assert.equal(memo.reason, "HOST_ERR_INVALID_PAYLOAD");
    assert.match(memo.error?.message ?? "", /memo: is longer than 1000 characters/);
    const nul = await refused("agent.cma.message", { to: "cmb", body: "a\u0000b" });
    assert.match(nul.error?.message ?? "", /body: contains NUL/);
    const context = await refused("agent.cma.prompt", { question: "q", context: { blob: "y".repeat(20_000) } });
    assert.match(context.error?.message ?? "", /context: is larger than 16384 bytes/);
    const [moved] = await db.sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM ledger_transactions WHERE kind = 'transfer'`;
    assert.equal(Number(moved!.n), 0, "no refused transfer moved credits");
  });

  it("open prompts are listed with their context, oldest first; an answered one is not", async () => {
    type Open = { prompts: { prompt_id: string; agent_id: string; question: string; context: unknown }[] };
    await nats.js.publish("agent.cma.prompt", enc({ question: "A or B?", context: { plans: ["A", "B"] } }), { msgID: "prompt-1" });
    // the second after the first is recorded: one function handles several messages at once, so two
    // published back to back may be recorded in either order
    await waitFor("the first prompt open", async () => ((await nats.nc.request("admin.prompts.open", "", { timeout: 5000 })).json<Open>().prompts.length === 1 ? true : undefined));
    await nats.js.publish("agent.cmb.prompt", enc({ question: "Now?" }), { msgID: "prompt-2" });
    const open = await waitFor("both prompts open", async () => {
      const r = (await nats.nc.request("admin.prompts.open", "", { timeout: 5000 })).json<Open>();
      return r.prompts.length === 2 ? r : undefined;
    });
    assert.deepEqual(open.prompts.map((p) => [p.agent_id, p.question, p.context]), [["cma", "A or B?", { plans: ["A", "B"] }], ["cmb", "Now?", {}]]);
    const mine = (await nats.nc.request("admin.prompts.open", enc({ agent_id: "cmb" }), { timeout: 5000 })).json<Open>();
    assert.deepEqual(mine.prompts.map((p) => p.agent_id), ["cmb"]);
    await nats.js.publish("admin.reward.grant", enc({ agent_id: "cma", amount: 1, prompt_id: open.prompts[0]!.prompt_id, response: "B" }));
    await waitFor("the answered prompt leaves the list", async () => {
      const r = (await nats.nc.request("admin.prompts.open", "", { timeout: 5000 })).json<Open>();
      return r.prompts.length === 1 && r.prompts[0]!.agent_id === "cmb" ? true : undefined;
    });
    const bad = await nats.nc.request("admin.prompts.open", enc({ limit: 0 }), { timeout: 5000 });
    assert.equal(bad.headers?.get("Nats-Service-Error-Code"), "400");
  });

  it("market.prices answers with price, floor, supply and utilization per resource, and the current window", async () => {
    type Prices = { window_id: number; window_ms: number; closes_in_ms: number; last_cleared: number | null; resources: Record<string, { price: number; floor: number; supply: number; utilization: number; window_id: number | null }> };
    // the first tick clears a window: from then on there is a last cleared window
    const r = await waitFor("a window cleared", async () => {
      const x = (await nats.nc.request(Subjects.marketPrices(), "", { timeout: 5000 })).json<Prices>();
      return x.last_cleared !== null ? x : undefined;
    });
    const now = Math.floor(Date.now() / 500);
    assert.ok(r.window_id === now || r.window_id === now - 1, `window ${r.window_id}, clock says ${now}`);
    assert.equal(r.window_ms, 500);
    assert.ok(r.closes_in_ms > 0 && r.closes_in_ms <= 500, String(r.closes_in_ms));
    assert.ok(r.last_cleared! < r.window_id);
    assert.deepEqual(Object.keys(r.resources).sort(), ["attention", "cpu", "memory", "tokens"]);
    assert.deepEqual([r.resources.cpu!.supply, r.resources.cpu!.floor, r.resources.attention!.supply], [2000, 0.0001, 1]);
    for (const [resource, m] of Object.entries(r.resources)) {
      assert.ok(m.price >= m.floor, resource);
      assert.ok(m.utilization >= 0 && m.utilization <= 1, resource);
      assert.ok(m.window_id === null || m.window_id <= r.last_cleared!, resource);
    }
    // what the clearing wrote, read around the request (a clearing may move it in between)
    const read = async () => (await db.sql<{ price: bigint }[]>`SELECT price FROM market_state WHERE resource = 'cpu'`)[0]!.price;
    const before = await read();
    const cpu = (await nats.nc.request(Subjects.marketPrices(), "", { timeout: 5000 })).json<Prices>().resources.cpu!.price;
    const after = await read();
    assert.ok([Number(before) / 1e6, Number(after) / 1e6].includes(cpu), `${cpu} is neither ${before} nor ${after} µ`);
  });

  it("execute_trade answers in snake_case (and, until 0.3, the 0.1 names too)", async () => {
    const r = (await nats.nc.request("market.execute_trade", enc({ agent_id: "cmb", bid: { resource: "memory", quantity: 10, price: 0.01 } }), { timeout: 5000 })).json<{
      agent_id: string;
      bid: Record<string, unknown>;
    }>();
    assert.equal(r.agent_id, "cmb");
    assert.equal(r.bid.status, "placed");
    assert.equal(typeof r.bid.bid_id, "string");
    assert.equal(typeof r.bid.window_id, "number");
    assert.equal(r.bid.bidId, r.bid.bid_id);
    assert.equal(r.bid.windowId, r.bid.window_id);
  });
});
