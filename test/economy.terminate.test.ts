import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { Kvm } from "@nats-io/kv";
import { loadConfigFile } from "../host/configFile.ts";
import { listDeadLetters, type DeadLetter } from "../host/deadLetter.ts";
import { loadSettings } from "../config/settings.ts";
import { Subjects } from "../contract/subjects.ts";
import { checkLedger } from "../economy/ledger.ts";
import { clearMarketWindow } from "../economy/clearing.ts";
import { windowOf } from "../economy/runtime.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { ROOT, readSubject, startHost, waitFor } from "./helpers/host.ts";

// An operator terminates an agent (admin.agent.terminate): its open bid is released, the fact is
// agent_terminated on AUDIT, and from then on every command of its own — and credits to it — is
// refused at once with AGENT_TERMINATED, with the ledger unchanged and still proved by checkLedger.
// The window is an hour long, so no clearing runs unless the test runs one.

const enc = (v: unknown) => JSON.stringify(v);
const WINDOW_MS = 3_600_000;

type Envelope = { type: string; to: string | null; payload: Record<string, unknown> };

describe("terminating an agent", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  let n = 0;

  const balance = async (agent: string) => (await nats.nc.request(Subjects.economicBalance(agent), "", { timeout: 5000 })).json<{ balance: number; reserved: number; available: number }>();
  const transactions = async () => Number((await db.sql<{ n: bigint }[]>`SELECT count(*)::bigint AS n FROM ledger_transactions`)[0]!.n);

  before(async () => {
    nats = await startTestNats(hooks, { auth: true });
    db = await startTestDatabase(hooks);
    const config = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
    const settings = loadSettings({ AGENT_WORKSPACES: process.env.AGENT_WORKSPACES, DATABASE_URL: db.url, ECONOMY_WINDOW_MS: String(WINDOW_MS), LOG_LEVEL: "error", NATS_AUTH_DIR: nats.auth!.authority.dir });
    await startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config, settings });
    for (const agent of ["tra", "trb", "trc"]) await nats.js.publish("admin.genesis", enc({ agent_id: agent, credits: 100 }));
    // genesis commands are handled several at once: wait for each
    await waitFor("agents funded", async () => {
      for (const a of ["tra", "trb", "trc"]) if ((await balance(a).catch(() => null))?.balance !== 100) return undefined;
      return true;
    });
  });

  /** Publishes a command with its own msg id and waits for its dead letter. */
  async function refused(subject: string, body: unknown): Promise<DeadLetter> {
    const msgId = `term-cmd-${++n}`;
    await nats.js.publish(subject, enc(body), { msgID: msgId });
    return waitFor(`${subject} dead-lettered`, async () => (await listDeadLetters(nats.jsm, "DEAD_LETTERS", { prefix: "dlq" })).find((d) => d.msgId === msgId), 20_000, 50);
  }

  it("releases the agent's open bid, keeps its credits, states agent_terminated and bid_lost", async () => {
    await nats.js.publish(Subjects.marketBid("tra"), enc({ resource: "attention", quantity: 1, price: 10 }), { msgID: "tra-bid-1" });
    await waitFor("the bid reserves 10", async () => ((await balance("tra")).reserved === 10 ? true : undefined));

    await nats.js.publish(Subjects.adminAgentTerminate(), enc({ agent_id: "tra", reason: "runaway spending" }), { msgID: "terminate-tra" });
    const ev = await waitFor("agent_terminated", async () => (await readSubject(nats.jsm, "AUDIT", "system.agent_terminated")).map((m) => m.json<Envelope>()).find((e) => e.payload.agent_id === "tra"));
    assert.deepEqual(ev.payload, { agent_id: "tra", reason: "runaway spending", balance: 100, bids_released: 1, released: 10 });
    assert.equal(ev.to, "tra");
    const lost = await waitFor("bid_lost", async () => (await readSubject(nats.jsm, "AUDIT", "market.bid_lost")).map((m) => m.json<Envelope>()).find((e) => e.payload.agent_id === "tra"));
    assert.equal(lost.payload.reason, "AGENT_TERMINATED");

    assert.deepEqual(await balance("tra"), { agent_id: "tra", balance: 100, reserved: 0, available: 100 });
    const [bid] = await db.sql<{ status: string; reason: string }[]>`SELECT status, reason FROM bids WHERE source_msg_id = 'tra-bid-1'`;
    assert.deepEqual({ ...bid }, { status: "lost", reason: "AGENT_TERMINATED" });
    const [agent] = await db.sql<{ status: string; reason: string }[]>`SELECT status, metadata->'terminated'->>'reason' AS reason FROM agents WHERE id = 'tra'`;
    assert.deepEqual({ ...agent }, { status: "terminated", reason: "runaway spending" });
    const kv = await new Kvm(nats.nc).open("agent_state");
    await waitFor("agent_state says terminated", async () => ((await kv.get("tra"))?.json<{ status: string }>().status === "terminated" ? true : undefined));
  });

  const cases: [string, string, unknown, string, RegExp][] = [
    ["its bid", "market.bid.tra", { resource: "cpu", quantity: 1, price: 0.01 }, "AGENT_TERMINATED", /tra is terminated/],
    ["its transfer", "economic.transfer.tra", { to: "trb", amount: 1 }, "AGENT_TERMINATED", /tra is terminated/],
    ["its spawn", "economic.spawn.tra", { child_id: "tra-child", credits: 1 }, "AGENT_TERMINATED", /tra is terminated/],
    ["its message", "agent.tra.message", { to: "trb", body: "still here" }, "AGENT_TERMINATED", /tra is terminated/],
    ["its prompt", "agent.tra.prompt", { question: "may I?" }, "AGENT_TERMINATED", /tra is terminated/],
    ["its MCP request", Subjects.mcpRequest("web_search", "tra"), { agent_id: "tra", server: "search", tool: "web_search", params: { query: "x" }, reply_subject: "agent.tra.inbox.mcp" }, "AGENT_TERMINATED", /tra is terminated/],
    ["a transfer to it", "economic.transfer.trb", { to: "tra", amount: 1 }, "AGENT_TERMINATED", /tra is terminated/],
    ["a message to it", "agent.trb.message", { to: "tra", body: "hello?" }, "AGENT_TERMINATED", /tra is terminated/],
    ["a reward to it", "admin.reward.grant", { agent_id: "tra", amount: 5 }, "AGENT_TERMINATED", /tra is terminated/],
    ["terminating it again", "admin.agent.terminate", { agent_id: "tra", reason: "twice" }, "AGENT_TERMINATED", /tra is terminated already/],
    ["terminating an unknown agent", "admin.agent.terminate", { agent_id: "nobody-here", reason: "x" }, "UNKNOWN_AGENT", /nobody-here/],
  ];
  for (const [what, subject, body, code, message] of cases) {
    it(`then ${what} is refused: ${code}, first attempt, the ledger unchanged`, async () => {
      const before = await transactions();
      const d = await refused(subject, body);
      assert.equal(d.reason, code, d.error?.message);
      assert.equal(d.attempts, 1, "refused at once, not retried");
      assert.match(d.error?.message ?? "", message);
      assert.equal(await transactions(), before, "no ledger transaction");
    });
  }

  it("what was refused left nothing behind; the others' commands still work; the ledger checks", async () => {
    assert.deepEqual(await balance("tra"), { agent_id: "tra", balance: 100, reserved: 0, available: 100 });
    const [rows] = await db.sql<{ agents: number; messages: number; prompts: number; open: number }[]>`
      SELECT (SELECT count(*) FROM agents WHERE id = 'tra-child')::int AS agents,
             (SELECT count(*) FROM messages WHERE 'tra' IN (from_agent, to_agent))::int AS messages,
             (SELECT count(*) FROM prompts WHERE agent_id = 'tra')::int AS prompts,
             (SELECT count(*) FROM bids WHERE agent_id = 'tra' AND status = 'open')::int AS open`;
    assert.deepEqual({ ...rows }, { agents: 0, messages: 0, prompts: 0, open: 0 });
    const rejected = (await readSubject(nats.jsm, "AUDIT", "market.bid_rejected")).map((m) => m.json<Envelope>()).filter((e) => e.payload.agent_id === "tra");
    assert.deepEqual(rejected.map((e) => e.payload.reason), ["AGENT_TERMINATED"]);

    await nats.js.publish("economic.transfer.trb", enc({ to: "trc", amount: 1 }));
    await waitFor("trb paid trc", async () => ((await balance("trc")).balance === 101 ? true : undefined));
    const trade = (await nats.nc.request("market.execute_trade", enc({ agent_id: "tra", bid: { resource: "cpu", quantity: 1, price: 0.01 } }), { timeout: 5000 })).json<{ bid: { status: string; reason: string } }>();
    assert.deepEqual([trade.bid.status, trade.bid.reason], ["rejected", "AGENT_TERMINATED"]);

    const check = await checkLedger(db.sql);
    assert.equal(check.ok, true, JSON.stringify(check, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    assert.equal(check.totalAgents, 300_000_000n);
  });

  it("a clearing that finds an open bid of a terminated agent loses it and burns nothing", async () => {
    const windowId = windowOf(Date.now(), WINDOW_MS);
    // a bid the market would never have taken (placing refuses it), written directly
    await db.sql`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, source_msg_id)
                 VALUES ('tra', ${windowId}, 'cpu', 1, 1000000, 1000000, 'orphan-bid')`;
    const r = await clearMarketWindow(db.sql, { sourceMsgId: "orphan-tick", correlationId: "orphan-tick", causationId: "orphan-tick", from: "test" }, windowId);
    assert.deepEqual([r.winners, r.losers, r.burned], [0, 1, 0]);
    const [bid] = await db.sql<{ status: string; reason: string }[]>`SELECT status, reason FROM bids WHERE source_msg_id = 'orphan-bid'`;
    assert.deepEqual({ ...bid }, { status: "lost", reason: "AGENT_TERMINATED" });
    assert.equal((await checkLedger(db.sql)).ok, true);
  });
  it("closes a terminated agent's NATS connection and refuses it from then on; other agents stay connected", async () => {
    await nats.js.publish("admin.genesis", enc({ agent_id: "trd", credits: 100 }));
    await waitFor("trd funded", async () => ((await balance("trd").catch(() => null))?.balance === 100 ? true : undefined));
    const trd = await nats.auth!.connect({ agent: "trd" }, { reconnect: false });
    const trc = await nats.auth!.connect({ agent: "trc" }, { reconnect: false });
    assert.equal((await trd.request(Subjects.economicBalance("trd"), "", { timeout: 5000 })).json<{ balance: number }>().balance, 100, "its own credentials work");
    const closed = trd.closed();
    await nats.js.publish(Subjects.adminAgentTerminate(), enc({ agent_id: "trd", reason: "done" }), { msgID: "terminate-trd" });
    const err = await Promise.race([closed, new Promise((r) => setTimeout(() => r(new Error("still connected after 10 s")), 10_000))]);
    assert.match(String((err as Error | undefined)?.message), /Authentication Revoked|Authorization Violation/);
    await assert.rejects(nats.auth!.connect({ agent: "trd" }, { reconnect: false }), /Authorization Violation/, "credentials issued after the termination are refused too");
    assert.equal((await trc.request(Subjects.economicBalance("trc"), "", { timeout: 5000 })).json<{ agent_id: string }>().agent_id, "trc");
  });
});
