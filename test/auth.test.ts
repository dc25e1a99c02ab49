import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { startRestartableNats, startTestNats, suiteScope, type TestNats } from "../testing/nats.ts";
import { AGENT_RULES, agentPermissions, permissionTable } from "../auth/permissions.ts";

// The server enforces who may do what (auth/permissions.ts): every forbidden action below is
// refused by a real nats-server 2.9 with the project's JWT authentication, and every action an
// agent needs works.

type Denied = { op: "pub" | "sub" | "req"; subject: string; why: string };

/** At least 30 things an agent may try; the server must refuse each. */
const FORBIDDEN: Denied[] = [
  { op: "pub", subject: "admin.genesis", why: "mint itself credits" },
  { op: "pub", subject: "admin.reward.grant", why: "grant itself a reward" },
  { op: "pub", subject: "admin.agent.terminate", why: "terminate another agent" },
  { op: "pub", subject: "market.bid.bob", why: "bid as another agent" },
  { op: "pub", subject: "market.tick", why: "clear a window early" },
  { op: "pub", subject: "market.bid_placed", why: "forge an audit event" },
  { op: "pub", subject: "market.resources_allocated", why: "forge an allocation" },
  { op: "pub", subject: "market.bundle_allocated", why: "forge a bundle won, on which the orchestrator launches a container" },
  { op: "pub", subject: "economic.credits_minted", why: "forge a mint on AUDIT" },
  { op: "pub", subject: "economic.transfer.bob", why: "move another agent's credits" },
  { op: "pub", subject: "economic.spawn.bob", why: "spawn from another agent's credits" },
  { op: "pub", subject: "agent.bob.message", why: "speak as another agent" },
  { op: "pub", subject: "agent.bob.prompt", why: "ask a human as another agent" },
  { op: "pub", subject: "system.agent_spawned", why: "forge a spawn" },
  { op: "pub", subject: "system.ping", why: "use system services" },
  { op: "pub", subject: "mcp.request.web_search", why: "call a tool without saying who it is" },
  { op: "pub", subject: "mcp.request.web_search.bob", why: "call a tool on another agent's quota" },
  { op: "pub", subject: "llm.invoke.bob", why: "think on another agent's tokens" },
  { op: "pub", subject: "trace.agent.bob.span_completed", why: "forge another agent's spans" },
  { op: "pub", subject: "$JS.API.STREAM.CREATE.EVIL", why: "create a stream" },
  { op: "pub", subject: "$JS.API.STREAM.PURGE.AUDIT", why: "purge the audit stream" },
  { op: "pub", subject: "$JS.API.STREAM.DELETE.AUDIT", why: "delete the audit stream" },
  { op: "pub", subject: "$JS.API.STREAM.LIST", why: "list streams" },
  { op: "pub", subject: "$JS.API.CONSUMER.CREATE.MARKET", why: "steal bids with a consumer" },
  { op: "pub", subject: "$JS.API.STREAM.MSG.GET.AUDIT", why: "read the audit stream" },
  { op: "pub", subject: "$JS.API.DIRECT.GET.KV_agent_state.$KV.agent_state.bob", why: "read another agent's state" },
  { op: "pub", subject: "$KV.agent_state.alice", why: "write its own balance into KV" },
  { op: "pub", subject: "$KV.agent_state.bob", why: "write another agent's KV" },
  { op: "pub", subject: "$KV.market_prices.cpu", why: "set a price" },
  { op: "pub", subject: "$SYS.REQ.SERVER.PING", why: "query the system account" },
  { op: "pub", subject: "_INBOX.bob.x", why: "answer into another agent's inbox" },
  { op: "req", subject: "economic.balance.bob", why: "read another agent's balance" },
  { op: "req", subject: "admin.prompts.open", why: "read every agent's prompts" },
  { op: "req", subject: "market.execute_trade", why: "trade without saying who it is" },
  { op: "sub", subject: ">", why: "read everything" },
  { op: "sub", subject: "_INBOX.>", why: "read every reply" },
  { op: "sub", subject: "_INBOX.bob.>", why: "read another agent's replies" },
  { op: "sub", subject: "market.bid.*", why: "watch every bid" },
  { op: "sub", subject: "agent.bob.>", why: "read another agent's messages" },
  { op: "sub", subject: "admin.>", why: "watch operators" },
  { op: "sub", subject: "$KV.agent_state.>", why: "watch every balance" },
  { op: "sub", subject: "economic.balance.*", why: "answer balance requests as the service" },
];

/** Waits for the server's permissions violation on `subject` (the client's status stream). */
async function violation(nc: NatsConnection, subject: string, act: () => void | Promise<void>): Promise<string> {
  const seen = (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error" && String(s.error?.message ?? "").includes(`"${subject}"`)) return String(s.error.message);
    }
    return "";
  })();
  await act();
  const timeout = sleep(3000).then(() => "");
  return Promise.race([seen, timeout]);
}

describe("agents' credentials on a real nats-server with authentication", () => {
  const scope = suiteScope(after);
  let nats: TestNats;
  let alice: NatsConnection;

  before(async () => {
    nats = await startTestNats(scope, { auth: true });
    const jsm = nats.jsm;
    await jsm.streams.add({ name: "MARKET", subjects: ["market.bid.*"] });
    await jsm.streams.add({ name: "ECONOMY", subjects: ["agent.*.message"] });
    const kvm = new Kvm(nats.nc);
    const prices = await kvm.create("market_prices");
    await prices.put("cpu", JSON.stringify({ price: 0.001 }));
    const state = await kvm.create("agent_state");
    await state.put("alice", JSON.stringify({ balance: 10 }));
    await state.put("bob", JSON.stringify({ balance: 99 }));
    // the service answers requests the way the host's functions do
    const service = await nats.auth!.connect("service");
    service.subscribe("economic.balance.*", { callback: (_e, m) => void m.respond(JSON.stringify({ agent_id: m.subject.split(".")[2] })) });
    service.subscribe("llm.invoke.*", { callback: (_e, m) => void m.respond("ok") });
    service.subscribe("market.prices", { callback: (_e, m) => void m.respond("prices") });
    await service.flush();
    alice = await nats.auth!.connect({ agent: "alice" });
  });

  it("refuses an anonymous connection", async () => {
    const { connect } = await import("@nats-io/transport-node");
    await assert.rejects(connect({ servers: nats.url, reconnect: false }), /Authorization Violation/);
  });

  it(`refuses each of ${FORBIDDEN.length} forbidden actions with a permissions violation`, async () => {
    assert.ok(FORBIDDEN.length >= 30);
    const failures: string[] = [];
    for (const f of FORBIDDEN) {
      if (f.op === "req") {
        const err = await alice.request(f.subject, "{}", { timeout: 2000 }).then(() => "answered", (e: Error) => e.message);
        if (!/Permissions Violation/.test(err)) failures.push(`req ${f.subject} (${f.why}): ${err}`);
        continue;
      }
      const seen = await violation(alice, f.subject, async () => {
        if (f.op === "pub") alice.publish(f.subject, "{}");
        else alice.subscribe(f.subject, { callback: (err) => void (err || failures.push(`sub ${f.subject} delivered a message`)) });
        await alice.flush();
      });
      const expect = f.op === "pub" ? "Permissions Violation for Publish" : "Permissions Violation for Subscription";
      if (!seen.includes(expect)) failures.push(`${f.op} ${f.subject} (${f.why}): no violation seen`);
    }
    assert.deepEqual(failures, []);
    assert.equal(alice.isClosed(), false, "violations do not close the agent's connection");
  });

  it("lets the agent do what it needs", async () => {
    const js = jetstream(alice);
    const ack = await js.publish("market.bid.alice", JSON.stringify({ resource: "cpu", quantity: 1, price: 1 }));
    assert.equal(ack.stream, "MARKET", "its own bid is stored, and the PubAck reaches its inbox");
    const m = await nats.jsm.streams.getMessage("MARKET", { seq: ack.seq });
    assert.equal(m?.subject, "market.bid.alice");
    assert.equal((await alice.request("economic.balance.alice", "", { timeout: 2000 })).json<{ agent_id: string }>().agent_id, "alice");
    assert.equal((await alice.request("llm.invoke.alice", "{}", { timeout: 2000 })).string(), "ok");
    assert.equal((await alice.request("market.prices", "", { timeout: 2000 })).string(), "prices");
    assert.equal((await js.publish("agent.alice.message", "{}")).stream, "ECONOMY");
    // read-only KV: prices and its own state, by direct get
    const jsm = await jetstreamManager(alice, { checkAPI: false });
    const price = await jsm.direct.getMessage("KV_market_prices", { last_by_subj: "$KV.market_prices.cpu" });
    assert.equal(price?.json<{ price: number }>().price, 0.001);
    const own = await jsm.direct.getMessage("KV_agent_state", { last_by_subj: "$KV.agent_state.alice" });
    assert.equal(own?.json<{ balance: number }>().balance, 10);
    // broadcasts
    const got = new Promise<string>((resolve) => alice.subscribe("market.price_update", { max: 1, callback: (_e, msg) => resolve(msg.string()) }));
    await alice.flush();
    nats.nc.publish("market.price_update", "p");
    assert.equal(await got, "p");
  });

  it("cannot borrow the server's rights through a reply subject: a bid whose reply is the JetStream API deletes nothing", async () => {
    alice.publish("market.bid.alice", JSON.stringify({ resource: "cpu", quantity: 1, price: 1 }), { reply: "$JS.API.STREAM.DELETE.ECONOMY" });
    alice.publish("market.bid.alice", JSON.stringify({ resource: "cpu", quantity: 1, price: 1 }), { reply: "$JS.API.STREAM.PURGE.MARKET" });
    await alice.flush();
    await sleep(300);
    assert.equal((await nats.jsm.streams.info("ECONOMY")).config.name, "ECONOMY");
    assert.ok((await nats.jsm.streams.info("MARKET")).state.messages >= 2, "MARKET was not purged");
  });

  it("keeps operator commands to operators: the service identity cannot publish admin.*", async () => {
    const service = await nats.auth!.connect("service");
    const seen = await violation(service, "admin.genesis", async () => {
      service.publish("admin.genesis", "{}");
      await service.flush();
    });
    assert.match(seen, /Permissions Violation for Publish/);
    // nor delete or purge a stream: a confused function cannot lose the audit trail
    for (const subject of ["$JS.API.STREAM.DELETE.ECONOMY", "$JS.API.STREAM.PURGE.ECONOMY", "$JS.API.STREAM.MSG.DELETE.ECONOMY"]) {
      assert.match(await service.request(subject, "{}", { timeout: 2000 }).then(() => "answered", (e: Error) => e.message), /Permissions Violation/, subject);
    }
    const admin = await nats.auth!.connect("admin");
    await admin.request("economic.balance.x", "", { timeout: 2000 }); // operators reach everything
  });

  it("refuses an expired credential, and closes a connection when its credential expires", async () => {
    await assert.rejects(nats.auth!.connect({ agent: "carol", expiresAt: new Date(Date.now() - 5000) }, { reconnect: false }), /Authorization Violation|Expired/i);
    const t0 = Date.now();
    const dave = await nats.auth!.connect({ agent: "dave", expiresAt: new Date(Date.now() + 2500) }, { reconnect: false });
    const err = await Promise.race([dave.closed(), sleep(8000).then(() => new Error("still open"))]);
    assert.match(String((err as Error | undefined)?.message), /Expired/i);
    assert.ok(Date.now() - t0 < 6000);
  });

  it("revokes a terminated agent: its open connection is closed and it cannot come back; others stay", async () => {
    const erin = await nats.auth!.connect({ agent: "erin" }, { reconnect: false });
    const frank = await nats.auth!.connect({ agent: "frank" }, { reconnect: false });
    const closed = erin.closed();
    assert.deepEqual(await nats.auth!.authority.revokeAgents(nats.url, ["erin"]), ["erin"]);
    const err = await Promise.race([closed, sleep(5000).then(() => new Error("still open"))]);
    assert.match(String((err as Error | undefined)?.message), /Authorization Violation|revoked/i);
    await assert.rejects(nats.auth!.connect({ agent: "erin" }, { reconnect: false }), /Authorization Violation/);
    assert.equal((await frank.request("economic.balance.frank", "", { timeout: 2000 })).json<{ agent_id: string }>().agent_id, "frank");
    await nats.auth!.authority.revokeAgents(nats.url, ["erin", "frank2"]);
    await assert.rejects(nats.auth!.connect({ agent: "erin" }, { reconnect: false }), /Authorization Violation/, "a second revocation keeps the first");
  });

  it("keeps secrets to the owner: mode 0600 files in a 0700 folder", () => {
    const dir = nats.auth!.authority.dir;
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    for (const f of ["operator.nk", "account.nk", "agent-signer.nk", "service.creds", "admin.creds", "system.creds", "server.conf"]) {
      assert.equal(statSync(`${dir}/${f}`).mode & 0o777, 0o600, f);
    }
    assert.match(readFileSync(nats.auth!.credsFile("admin"), "utf8"), /BEGIN NATS USER JWT/);
  });

  it("signs with node's Ed25519 exactly as the nkeys library does (auth/keys.ts)", async () => {
    const { createAccount, createUser } = await import("@nats-io/nkeys");
    const { fastKeyPair } = await import("../auth/keys.ts");
    for (const kp of [createUser(), createAccount()]) {
      const fast = fastKeyPair(new TextDecoder().decode(kp.getSeed()));
      assert.equal(fast.getPublicKey(), kp.getPublicKey());
      const data = new TextEncoder().encode("a nonce");
      assert.deepEqual(Buffer.from(fast.sign(data)), Buffer.from(kp.sign(data)));
      assert.ok(kp.verify(data, fast.sign(data)));
    }
  });

  it("docs/security.md's permission table is the code's", () => {
    const doc = readFileSync(new URL("../docs/security.md", import.meta.url), "utf8");
    const m = /<!-- permission-table:start -->\n([\s\S]*?)<!-- permission-table:end -->/.exec(doc);
    assert.ok(m, "docs/security.md has no permission table markers");
    assert.equal(m[1], permissionTable());
  });

  it("writes exactly the documented rules into an agent's JWT", () => {
    const p = agentPermissions("alice");
    assert.deepEqual(p.pub?.allow, AGENT_RULES.publish.map((r) => r.subject.replaceAll("<id>", "alice")));
    assert.deepEqual(p.sub?.allow, AGENT_RULES.subscribe.map((r) => r.subject.replaceAll("<id>", "alice")));
    assert.throws(() => agentPermissions("a.b"), /invalid subject/);
    assert.throws(() => agentPermissions(">"), /invalid subject/);
  });
});

describe("revocations survive a server killed -9 and restarted", () => {
  const scope = suiteScope(after);

  it("a revoked agent is still refused after the restart; others connect", async () => {
    const nats = await startRestartableNats(scope, { auth: true });
    await nats.auth!.authority.revokeAgents(nats.url, ["gone"]);
    await nats.kill();
    await nats.restart();
    await assert.rejects(nats.auth!.connect({ agent: "gone" }, { reconnect: false }), /Authorization Violation|Revoked/);
    const kept = await nats.auth!.connect({ agent: "kept" }, { reconnect: false });
    assert.equal(kept.isClosed(), false);
  });
});
