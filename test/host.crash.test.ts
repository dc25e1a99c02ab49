import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { listDeadLetters } from "../host/deadLetter.ts";
import { ErrorCode } from "../host/errors.ts";
import { POISON_TRIALS } from "../host/jetstreamTrigger.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS, readSubject, runCli, startCli, waitFor } from "./helpers/host.ts";

// A worker that dies is not the fault of the messages it held. jobs/crashy (maxDeliver 1, one at a
// time, eight held) gets one poison job that SIGKILLs whatever worker runs it, among innocent jobs
// held beside it: the innocents all complete, none dead-lettered; the poison job ends in the
// dead-letter stream as HOST_ERR_POISON after its runs alone, and the worker keeps being replaced.

const fixtures = ["--config", FIXTURE_CONFIG, "--functions", FIXTURE_FUNCTIONS];
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

describe("crashes are not poison", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let env: Record<string, string>;
  before(async () => {
    nats = await startTestNats(hooks);
    env = { NATS_URL: nats.url, LOG_LEVEL: "info" };
    assert.equal((await runCli(["streams", "apply", ...fixtures], env)).code, 0);
  });

  it("innocent jobs held by a killed worker complete; the job that kills every worker is dead-lettered as poison", async () => {
    const host = startCli(hooks, ["start", "--workers", "1", ...fixtures], env);
    await host.waitForLog("ready", (l) => l.msg === "all workers ready");
    const innocents = 15;
    await nats.js.publish("jobs.crashy", json({ id: "poison", kill: true }), { msgID: "crashy-poison" });
    for (let i = 0; i < innocents; i++) await nats.js.publish("jobs.crashy", json({ id: `ok${i}`, ms: 20 }), { msgID: `crashy-ok${i}` });

    const dead = await waitFor("the poison job dead-lettered", async () => {
      const list = await listDeadLetters(nats.jsm, "DEAD_LETTERS", { fn: "jobs/crashy", prefix: "dlq", limit: 100 });
      return list.length ? list : undefined;
    }, 120_000, 250);
    const done = await waitFor("every innocent job's receipt", async () => {
      const ids = new Set((await readSubject(nats.jsm, "OUT", "out.crashy.>")).map((m) => m.json<{ id: string }>().id));
      return ids.size >= innocents ? ids : undefined;
    }, 60_000, 250);

    assert.equal(dead.length, 1, `only the poison job is dead-lettered: ${JSON.stringify(dead.map((d) => [d.reason, d.data.length]))}`);
    assert.equal(dead[0]!.reason, ErrorCode.Poison);
    assert.match(dead[0]!.error?.message ?? "", new RegExp(`${POISON_TRIALS} runs of it alone`));
    assert.equal(JSON.parse(new TextDecoder().decode(dead[0]!.data)).id, "poison");
    assert.ok(!done.has("poison"));
    for (let i = 0; i < innocents; i++) assert.ok(done.has(`ok${i}`), `ok${i} did not complete`);

    // the poison job killed its worker once on its budget and once per run alone; each was replaced
    const deaths = host.logs().filter((l) => l.msg === "worker died; restarting").length;
    assert.ok(deaths >= 1 + POISON_TRIALS, `${deaths} worker deaths`);
    const ran = host.logs().filter((l) => l.msg === "past its budget without an outcome; running it alone");
    assert.ok(ran.length >= POISON_TRIALS);
    // every line the supervisor printed is one whole JSON object
    const lines = host.output().split("\n").filter(Boolean);
    const broken = lines.filter((l) => {
      try {
        return typeof JSON.parse(l) !== "object";
      } catch {
        return true;
      }
    });
    assert.deepEqual(broken, []);
    // a worker can die before it says "ready" (its first message is the poison job's trial), so
    // count on order, not numbers: the last word is a worker that is ready
    await waitFor("a worker ready after the last death", () => {
      const msgs = host.logs().map((l) => l.msg);
      return msgs.lastIndexOf("worker ready") > msgs.lastIndexOf("worker died; restarting") || undefined;
    }, 30_000);
    assert.equal((await host.stop("SIGTERM")).code, 0);
  });
});
