import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ErrorCode } from "../host/errors.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { runCli, waitFor } from "./helpers/host.ts";
import { assertNothingLost, deadLettersByReason, publishBids, samplesOf, seedAgents, startEconomyHost } from "./helpers/chaos.ts";

// 10,000 malformed messages across every pull trigger's subject (and malformed requests to every
// request function), with valid bids interleaved: each malformed message is dead-lettered with its
// reason, each request answered with an error, every valid bid processed, and every function's
// loop still running afterwards (`host health` exits 0).

const MALFORMED = Number(process.env.FAULT_MALFORMED ?? 10_000);
const BIDS = 1000;
const enc = new TextEncoder();

/** Subjects of the economy's pull triggers, and bodies that no schema there accepts. */
const SUBJECTS = [
  "market.bid.mf0",
  "market.tick",
  "admin.genesis",
  "admin.reward.grant",
  "economic.transfer.mf0",
  "economic.spawn.mf0",
  "agent.mf0.prompt",
  "agent.mf0.message",
  "mcp.request.web_search",
];
const BODIES: Uint8Array[] = [
  enc.encode("{not json"),
  enc.encode("[]"),
  enc.encode("null"),
  enc.encode('{"resource":"gold","quantity":-1,"price":"x","window_id":"soon","agent_id":"","to":7}'),
  new Uint8Array([0, 0xff, 0xfe, 0x7b, 0x00]),
  enc.encode(JSON.stringify({ junk: "x".repeat(100_000) })),
];
/** Valid JSON that passes a schema and fails in the database or the domain: still dead-lettered, with its code. */
const DOMAIN: [string, string][] = [
  ["agent.mf0.message", JSON.stringify({ to: "mf1", body: "a\u0000b" })], // NUL, which PostgreSQL's text cannot hold: refused by the schema
  ["economic.transfer.mf0", JSON.stringify({ to: "nobody-here", amount: 1 })], // UNKNOWN_AGENT
  ["economic.transfer.mf0", JSON.stringify({ to: "mf1", amount: 1e300 })], // INVALID_AMOUNT
];
// a refusal is dead-lettered under its own code (a domain code, or the SQLSTATE)
const EXPECTED_REASONS = new Set<string>([ErrorCode.MalformedJson, ErrorCode.InvalidPayload, "UNKNOWN_AGENT", "INVALID_AMOUNT"]);

describe("faults: 10,000 malformed messages across every trigger", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  before(async () => {
    nats = await startTestNats(hooks, { auth: true });
    db = await startTestDatabase(hooks);
  });

  it("dead-letters each with its reason, answers malformed requests with errors, processes the valid traffic, and every loop keeps running", async () => {
    const agents = await seedAgents(db.sql, "mf", 10);
    const { host, env } = await startEconomyHost(hooks, { natsUrl: nats.url, auth: nats.auth, databaseUrl: db.url, workers: 2 });

    // malformed publishes and valid bids at the same time
    const bad = (async () => {
      const pending: Promise<unknown>[] = [];
      for (let i = 0; i < MALFORMED; i++) {
        const domain = i % 10 === 9 ? DOMAIN[(i / 10) % DOMAIN.length | 0]! : undefined;
        const [subject, body] = domain ? [domain[0], enc.encode(domain[1])] : [SUBJECTS[i % SUBJECTS.length]!, BODIES[(i / SUBJECTS.length) % BODIES.length | 0]!];
        pending.push(nats.js.publish(subject, body, { msgID: `mf-bad-${i}` }));
        if (pending.length >= 256) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
    })();
    const good = publishBids(nats.js, { count: BIDS, agents, idPrefix: "mf-bid", retry: true, window: 16 });
    // malformed requests to every request function: each gets an error reply, none a timeout
    const requests: [string, Uint8Array][] = [
      ["system.ping", enc.encode("{not json")],
      ["system.ping", enc.encode('{"echo":7}')],
      ["economic.balance.mf0", enc.encode("{not json")],
      ["economic.balance.nobody-here", enc.encode("")],
      ["market.execute_trade", enc.encode('{"agent_id":5}')],
      ["market.execute_trade", new Uint8Array([0, 0xff])],
    ];
    for (let round = 0; round < 20; round++) {
      for (const [subject, body] of requests) {
        const r = await nats.nc.request(subject, body, { timeout: 10_000 });
        const code = r.headers?.get("Nats-Service-Error-Code");
        assert.equal(code, "400", `${subject} ${new TextDecoder().decode(body)} → ${code} ${r.string()}`);
        assert.ok(r.json<{ error: { code: string } }>().error.code, "the error reply names its code");
      }
    }
    await bad;
    const run = await good;

    // valid traffic: every bid in the ledger once, its event on AUDIT once (nothing of it dead-lettered)
    const dead = await waitFor("every malformed message dead-lettered", async () => {
      const d = await deadLettersByReason(nats.jsm);
      return Object.values(d).reduce((a, b) => a + b, 0) >= MALFORMED ? d : undefined;
    }, 180_000, 500);
    assert.equal(Object.values(dead).reduce((a, b) => a + b, 0), MALFORMED, JSON.stringify(dead));
    for (const reason of Object.keys(dead)) assert.ok(EXPECTED_REASONS.has(reason), `unexpected reason ${reason}: ${samplesOf(dead)[reason]}`);
    assert.ok(dead[ErrorCode.MalformedJson]! > 0 && dead[ErrorCode.InvalidPayload]! > 0 && dead.UNKNOWN_AGENT! > 0 && dead.INVALID_AMOUNT! > 0, JSON.stringify(dead));

    const health = await runCli(["health", "--json"], env);
    assert.equal(health.code, 0, health.stdout + health.stderr);
    const h = JSON.parse(health.stdout) as { status: string; workers: number; degraded: unknown[] };
    assert.equal(h.status, "ok");
    assert.deepEqual(h.degraded, []);
    // a pull may fail under load (heartbeats missed on a busy machine); each must have recovered
    const failed = host.logs().filter((l) => l.msg === "pull failed; re-binding the consumer").length;
    const recovered = host.logs().filter((l) => l.msg === "consumer loop recovered").length;
    assert.ok(recovered >= failed, `${failed} pulls failed, ${recovered} loops recovered`);
    assert.equal(host.logs().filter((l) => l.msg === "worker died; restarting").length, 0, "a worker exited");

    // the dead letters are the malformed messages only
    await assertNothingLost(db.sql, nats.jsm, { idPrefix: "mf-bid", acked: run.acked });
    console.log(`dead-lettered by reason: ${JSON.stringify(dead)}`);
    assert.equal((await host.stop("SIGTERM")).code, 0);
  });
});
