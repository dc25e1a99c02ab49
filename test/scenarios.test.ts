import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadConfigFile } from "../host/configFile.ts";
import { loadScenario, parseScenario, ScenarioFormatError } from "../scenarios/format.ts";
import { judge, type RunEvent } from "../scenarios/judge.ts";
import { replayScenario, runScenario, type Report } from "../scenarios/runner.ts";
import { main } from "../scenarios/cli.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { FIXTURES, ROOT, startHost } from "./helpers/host.ts";

// The scenario runner against a real stack (nats-server, PostgreSQL, the project's functions/),
// the way `scenario run` drives it when NATS_URL and DATABASE_URL are set.

const BROKEN = resolve(FIXTURES, "scenarios/broken.scenario.json");
const verdicts = (r: Report) => r.assertions.map((a) => [a.name, a.verdict]);

describe("scenario runner", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  let lines: string[] = [];
  const reports = new Map<string, Report>();
  const tmp = mkdtempSync(join(tmpdir(), "scenario-test-"));
  hooks.after(async () => rmSync(tmp, { recursive: true, force: true }));

  before(async () => {
    nats = await startTestNats(hooks);
    db = await startTestDatabase(hooks);
    process.env.DATABASE_URL = db.url;
    process.env.ECONOMY_WINDOW_MS = "400";
    const config = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
    ({ lines } = await startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config }));
  });

  const run = async (name: string) => {
    const report = await runScenario(loadScenario(name), { natsUrl: nats.url, databaseUrl: db.url });
    reports.set(name, report);
    return report;
  };
  const explain = (r: Report) => `${JSON.stringify(r.assertions, null, 2)}\n${lines.join("\n")}`;

  it("`scenario run er001` through the CLI: every assertion passes, JSON and JUnit reports written", async () => {
    process.env.NATS_URL = nats.url;
    const json = join(tmp, "er001.json");
    const junit = join(tmp, "er001.xml");
    const write = process.stdout.write.bind(process.stdout);
    let out = "";
    process.stdout.write = ((chunk: string) => ((out += chunk), true)) as typeof process.stdout.write;
    let code: number;
    try {
      code = await main(["run", "er001", "--json", json, "--junit", junit]);
    } finally {
      process.stdout.write = write;
      delete process.env.NATS_URL;
    }
    const report = JSON.parse(readFileSync(json, "utf8")) as Report;
    assert.equal(code, 0, `${out}\n${explain(report)}`);
    reports.set("er001", report);
    assert.equal(report.scenario, "er001");
    assert.equal(report.mode, "live");
    assert.match(report.run_id, /^er001-/);
    assert.equal(report.passed, true);
    assert.deepEqual(report.assertions.map((a) => a.verdict), report.assertions.map(() => "pass"));
    const seq = report.assertions.find((a) => a.kind === "sequence")!;
    assert.match(seq.observed, /^bid_placed@\d+ms → resources_allocated@\d+ms → credits_burned@\d+ms → price_update@\d+ms$/);
    assert.equal(report.balances?.alice, 80, "balances are reported under the scenario's names");
    assert.equal(report.ledger?.ok, true);
    assert.ok(report.event_types.bid_placed === 1 && report.event_types.credits_burned === 1);
    assert.match(out, /assertion\s+verdict\s+observed\s+time/);
    assert.match(out, /PASSED: 8\/8 assertions/);
    const xml = readFileSync(junit, "utf8");
    assert.match(xml, /<testsuite name="er001" [^>]*tests="8" failures="0"/);
  });

  for (const name of ["insufficient_funds", "contention", "spawn_lineage", "reward_minting", "conservation_burst"]) {
    it(`${name} passes`, async () => {
      const r = await run(name);
      assert.equal(r.passed, true, explain(r));
      assert.ok(r.assertions.every((a) => a.verdict === "pass"));
    });
  }

  it("contention: the efficiency metric is 1 and the loser is reported by its scenario name", () => {
    const r = reports.get("contention")!;
    assert.equal(r.assertions.find((a) => a.name === "efficiency")!.value, 1);
    assert.deepEqual(r.balances, { alice: 100, bob: 60 });
  });

  it("the broken fixture fails every assertion kind, saying what was expected and what was seen", async () => {
    const r = await runScenario(loadScenario(BROKEN), { natsUrl: nats.url, databaseUrl: db.url });
    reports.set("broken", r);
    assert.equal(r.passed, false);
    const by = Object.fromEntries(r.assertions.map((a) => [a.name, a]));
    const failed = (name: string, ...patterns: RegExp[]) => {
      const a = by[name]!;
      assert.equal(a.verdict, "fail", `${name}: ${a.message}`);
      for (const p of patterns) assert.match(a.message, p, name);
    };
    failed("exists: a rejection that never comes", /expected bid_rejected where payload\.agent_id = "alice" within 2500 ms/, /no bid_rejected event at all/);
    failed("exists: a burn that is too small", /expected credits_burned where payload\.amount <= 1/, /payload\.amount <= 1 \(was 20\)/);
    failed("sequence: placed then lost", /expected bid_placed → bid_lost where payload\.reason = "OUTBID"/, /no bid_lost .* after bid_placed@\d+ms/);
    failed("never: alice is charged", /expected no credits_burned where payload\.agent_id = "alice" during the run; saw credits_burned@\d+ms/);
    failed("state: alice kept 99", /expected balance of alice = 99 after credits_burned; saw 80/);
    failed("metrics: unequal", /expected gini > 0\.5; saw 0/);
    assert.equal(by["invariants: hold"]!.verdict, "pass", "a healthy ledger");
    // the request stimulus was answered and recorded
    assert.deepEqual(r.stimuli.find((s) => s.kind === "request")!.reply, { agent_id: "alice", balance: 100, reserved: 0, available: 100 });
  });

  it("invariants fail when the events do not add up (a doctored burn) or the ledger check fails", () => {
    const scenario = parseScenario({ name: "doctored", purpose: "x", window_ms: 400, timeout_ms: 1000, setup: { agents: [] }, stimuli: [], assertions: [{ kind: "invariants" }] });
    const ev = (seq: number, type: string, payload: object): RunEvent => ({ seq, type, t: 1000 + seq, env: { type, payload } });
    const events = [
      ev(1, "agent_spawned", { agent_id: "a", parent_id: null, credits: 10 }),
      ev(2, "credits_minted", { agent_id: "a", amount: 10, kind: "genesis", balance: 10 }),
      ev(3, "credits_burned", { agent_id: "a", amount: 4, bid_id: "1", window_id: 1, balance: 7 }),
    ];
    const [a] = judge({ scenario, events, market: [], live: { ledger: { ok: false, summary: "FAILED: 1 negative" } } });
    assert.equal(a!.verdict, "fail");
    assert.match(a!.message, /expected credits conserved, no negative balance; a: balance 7 ≠ minted \+ transfers − burned = 6/);
    assert.match(a!.message, /checkLedger failed: FAILED: 1 negative/);
  });

  it("replay re-judges past runs from the AUDIT stream alone, with the same verdicts", async () => {
    // an event of er001 stored a second time (as after the stream's duplicate window): counted once
    const burnedOf = async (runId: string) => {
      const c = await nats.js.consumers.get("AUDIT", { filter_subjects: "economic.credits_burned" });
      const pending = (await c.info(true)).num_pending;
      const batch = await c.fetch({ max_messages: pending, expires: 2000 });
      const found: Record<string, unknown>[] = [];
      for await (const m of batch) {
        const env = m.json<Record<string, unknown>>();
        if (env.correlation_id === runId) found.push(env);
        if (m.info.pending === 0) break;
      }
      return found;
    };
    const er001 = reports.get("er001")!;
    const [burned] = await burnedOf(er001.run_id);
    assert.ok(burned, "er001 burned credits");
    await nats.js.publish("economic.credits_burned", JSON.stringify(burned), { msgID: `${burned.id as string}:again` });
    assert.equal((await burnedOf(er001.run_id)).length, 2, "the stream holds it twice");
    for (const [name, live] of reports) {
      const scenario = name === "broken" ? loadScenario(BROKEN) : loadScenario(name);
      const replayed = await replayScenario(scenario, live.run_id, { natsUrl: nats.url });
      assert.equal(replayed.mode, "replay");
      assert.equal(replayed.events, live.events, name);
      assert.deepEqual(verdicts(replayed), verdicts(live), name);
      assert.deepEqual(replayed.assertions.map((a) => a.observed), live.assertions.map((a) => a.observed), name);
    }
    await assert.rejects(replayScenario(loadScenario("er001"), "er001-nosuchrun", { natsUrl: nats.url }), /no event in AUDIT has correlation_id er001-nosuchrun/);
  });

  it("the judge counts an event id once: a copy stored twice changes no count, balance or invariant", () => {
    const scenario = parseScenario({
      name: "twice",
      purpose: "x",
      window_ms: 400,
      timeout_ms: 1000,
      setup: { agents: [] },
      stimuli: [],
      assertions: [{ kind: "exists", type: "credits_burned", within_ms: 1000, count: { "=": 1 } }, { kind: "invariants" }, { kind: "state", of: "balance", agent: "a", equals: 6 }],
    });
    const ev = (seq: number, id: string, type: string, payload: object): RunEvent => ({ seq, type, t: 1000 + seq, env: { id, type, payload } });
    const burn = { agent_id: "a", amount: 4, bid_id: "1", window_id: 1, balance: 6 };
    const events = [
      ev(1, "e1", "agent_spawned", { agent_id: "a", parent_id: null, credits: 10 }),
      ev(2, "e2", "credits_minted", { agent_id: "a", amount: 10, kind: "genesis", balance: 10 }),
      ev(3, "e3", "credits_burned", burn),
      ev(9, "e3", "credits_burned", burn),
    ];
    const verdicts = judge({ scenario, events, market: [] });
    assert.deepEqual(verdicts.map((v) => [v.kind, v.verdict]), [["exists", "pass"], ["invariants", "pass"], ["state", "pass"]], JSON.stringify(verdicts, null, 2));
    assert.equal(verdicts[0]!.value, 1);
  });

  it("scenario files are validated with path: message errors; every shipped one loads", () => {
    assert.throws(
      () => parseScenario({ name: "Bad Name", purpose: "two\nlines", window_ms: 10, timeout_ms: 1000, setup: { agents: [{ id: "a", credits: 1, parent: "zz" }] }, stimuli: [{ at_ms: 0, kind: "shout", subject: "market.bid.*" }], assertions: [{ kind: "exists", type: "x" }] }, "bad.json"),
      (err: Error) => {
        assert.ok(err instanceof ScenarioFormatError);
        for (const p of [/name: must be 1–40 of \[a-z0-9_-\]/, /purpose: must be one line/, /window_ms: /, /stimuli\.0\.kind: /, /stimuli\.0\.subject: must be a NATS subject without wildcards/, /assertions\.0\.within_ms: /]) assert.match(err.message, p);
        return true;
      },
    );
    for (const name of ["er001", "insufficient_funds", "contention", "reward_minting", "spawn_lineage", "conservation_burst", "price_dynamics"]) assert.equal(loadScenario(name).name, name);
  });
});
