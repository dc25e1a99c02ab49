import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS, readSubject, runCli, startCli, waitFor } from "./helpers/host.ts";

// `host start --workers N` as separate processes on the same durable consumers.

const fixtures = ["--config", FIXTURE_CONFIG, "--functions", FIXTURE_FUNCTIONS];
const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));

type Receipt = { id: string; pid: number; attempt: number };

async function workReceipts(nats: TestNats, prefix: string): Promise<Receipt[]> {
  return (await readSubject(nats.jsm, "OUT", `out.work.${prefix}.>`)).map((m) => m.json<Receipt>());
}

describe("workers", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let env: Record<string, string>;
  before(async () => {
    nats = await startTestNats(hooks, { auth: true });
    env = { NATS_URL: nats.url, NATS_CREDS: nats.auth!.credsFile("service"), LOG_LEVEL: "info" };
    assert.equal((await runCli(["streams", "apply", ...fixtures], env)).code, 0);
  });

  function readyPids(logs: Record<string, unknown>[]): number[] {
    return logs.filter((l) => l.msg === "worker ready").map((l) => l.pid as number);
  }

  it("redelivers a SIGKILLed worker's messages to another worker and restarts it", async () => {
    const host = startCli(hooks, ["start", "--workers", "2", ...fixtures], env);
    await host.waitForLog("ready", (l) => l.msg === "all workers ready");
    const [victim, survivor] = readyPids(host.logs());
    const n = 8;
    // 2.5 s each, 4 at a time per worker: both workers hold some
    for (let i = 0; i < n; i++) await nats.js.publish(`jobs.work`, json({ id: `k.${i}`, ms: 2500 }));
    await waitFor("both workers busy", async () => (await nats.jsm.consumers.info("JOBS", "jobs_work")).num_ack_pending === n || undefined);
    await new Promise((r) => setTimeout(r, 500));
    process.kill(victim!, "SIGKILL");
    await host.waitForLog("restart", (l) => l.msg === "worker died; restarting" && l.pid === victim);
    const got = await waitFor("every job once more", async () => {
      const r = await workReceipts(nats, "k");
      return new Set(r.map((x) => x.id)).size === n ? r : undefined;
    }, 30_000);
    assert.ok(!got.some((r) => r.pid === victim), "the killed worker finished a job it should not have");
    const ci = await nats.jsm.consumers.info("JOBS", "jobs_work");
    assert.ok(ci.num_redelivered > 0 || got.some((r) => r.attempt > 1), "nothing was redelivered: the victim held no message");
    assert.ok(got.some((r) => r.pid !== survivor || r.attempt > 1));
    await waitFor("a replacement worker", () => readyPids(host.logs()).length >= 3 || undefined);
    assert.equal((await nats.jsm.streams.info("JOBS")).state.messages, 0);
    assert.equal((await host.stop("SIGTERM")).code, 0);
  });

  it("on SIGTERM finishes in-flight work, hands back the rest, exits 0: none lost, none run twice", async () => {
    const host = startCli(hooks, ["start", "--workers", "2", "--grace", "15000", ...fixtures], env);
    await host.waitForLog("ready", (l) => l.msg === "all workers ready");
    const n = 30;
    for (let i = 0; i < n; i++) await nats.js.publish("jobs.work", json({ id: `t.${i}`, ms: 800 }));
    await waitFor("work under way", async () => (await workReceipts(nats, "t")).length > 0 || undefined);
    const stopped = await host.stop("SIGTERM");
    assert.equal(stopped.code, 0, host.output());
    const done = await workReceipts(nats, "t");
    const left = (await nats.jsm.streams.info("JOBS")).state.messages;
    assert.equal(done.length + left, n, `${done.length} done + ${left} left ≠ ${n}`);
    assert.ok(left > 0, "everything finished before the stop; the test did not exercise hand-back");

    const again = startCli(hooks, ["start", "--workers", "1", ...fixtures], env);
    await again.waitForLog("ready", (l) => l.msg === "all workers ready");
    const all = await waitFor("all jobs", async () => {
      const r = await workReceipts(nats, "t");
      return r.length >= n ? r : undefined;
    }, 30_000);
    await new Promise((r) => setTimeout(r, 500));
    const final = await workReceipts(nats, "t");
    const counts = new Map<string, Receipt[]>();
    for (const r of final) counts.set(r.id, [...(counts.get(r.id) ?? []), r]);
    const twice = [...counts.values()].filter((rs) => rs.length > 1);
    assert.equal(final.length, n, `jobs ran twice: ${JSON.stringify(twice)}\n--- first host ---\n${host.output()}`);
    assert.equal(new Set(all.map((r) => r.id)).size, n);
    assert.equal((await again.stop("SIGTERM")).code, 0);
  });

  it("shares one rate limit between two worker processes", async () => {
    const host = startCli(hooks, ["start", "--workers", "2", ...fixtures], env);
    await host.waitForLog("ready", (l) => l.msg === "all workers ready");
    const n = 20;
    for (let i = 0; i < n; i++) await nats.js.publish("jobs.limited", json({ agent: "shared", n: i }));
    const got = await waitFor("all limited jobs", async () => {
      const r = await readSubject(nats.jsm, "OUT", "out.limited.shared");
      return r.length >= n ? r.map((m) => m.json<{ at: number; pid: number }>()) : undefined;
    }, 30_000);
    const times = got.map((r) => r.at).sort((a, b) => a - b);
    const span = times.at(-1)! - times[0]!;
    // 5 at once, then one per 200 ms: 15 × 200 = 3000 ms for 20 (two separate limits would take half)
    assert.ok(span >= 2700, `20 messages at a shared 5/s took only ${span} ms`);
    // in every 1 s window: at most the burst plus the rate (5 + 5), with one of tolerance
    for (const t of times) {
      const inWindow = times.filter((x) => x >= t && x < t + 1000).length;
      assert.ok(inWindow <= 11, `${inWindow} in one second from ${t}`);
    }
    assert.equal(new Set(got.map((r) => r.pid)).size, 2, `expected the two workers to share the work: ${JSON.stringify(got)}\n${host.output()}`);
    assert.equal((await host.stop("SIGTERM")).code, 0);
  });
});
