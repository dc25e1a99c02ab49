import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS, readSubject, runCli, startCli, waitFor } from "./helpers/host.ts";

// The `host` binary as a user runs it: streams plan/apply, drift, dead letters, status, bad files.

const fixtures = ["--config", FIXTURE_CONFIG, "--functions", FIXTURE_FUNCTIONS];

const made: string[] = [];
after(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A temporary folder whose .ts files are ES modules, like the project's (removed after the file). */
function tmp(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `syntropism-${prefix}-`));
  made.push(dir);
  writeFileSync(join(dir, "package.json"), '{ "type": "module" }\n');
  return dir;
}

describe("host streams plan|apply and drift", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let env: Record<string, string>;
  before(async () => {
    nats = await startTestNats(hooks);
    env = { NATS_URL: nats.url, LOG_LEVEL: "warn" };
  });

  it("plans creates, applies them idempotently, then reports no drift", async () => {
    const plan = await runCli(["streams", "plan", ...fixtures], env);
    assert.equal(plan.code, 2, plan.stderr);
    assert.match(plan.stdout, /\+ stream JOBS \(create\)/);
    assert.match(plan.stdout, /\+ stream DEAD_LETTERS \(create\)/);
    assert.match(plan.stdout, /\+ kv bucket host_ratelimit \(create\)/);

    const apply = await runCli(["streams", "apply", ...fixtures], env);
    assert.equal(apply.code, 0, apply.stderr);
    assert.match(apply.stdout, /created stream JOBS/);
    const info = await nats.jsm.streams.info("JOBS");
    assert.equal(info.config.retention, "workqueue");
    assert.equal(info.config.max_msgs, 100_000);
    assert.equal(info.config.discard, "new");
    assert.equal((await nats.jsm.streams.info("DEAD_LETTERS")).config.retention, "limits");

    const again = await runCli(["streams", "apply", ...fixtures], env);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /Nothing to do/);
    const clean = await runCli(["streams", "plan", ...fixtures], env);
    assert.equal(clean.code, 0);
    assert.match(clean.stdout, /No drift/);
  });

  it("shows a changed limit, and `host start` refuses to run on drift until applied", async () => {
    const dir = tmp("cfg");
    // a plain object is a valid config: defineConfig only adds types
    const changed = join(dir, "streams.config.ts");
    writeFileSync(
      changed,
      `export default {
        service: { name: "fixtures" },
        streams: [
          { name: "JOBS", subjects: ["jobs.>"], retention: "workqueue", maxMsgs: 50000, discard: "new" },
          { name: "OUT", subjects: ["out.>"], maxMsgs: 100000 },
          { name: "SMALL", subjects: ["small.>"], maxMsgs: 3, discard: "new" },
        ],
        kv: [{ bucket: "fixture_state" }],
      };\n`,
    );
    const plan = await runCli(["streams", "plan", "--config", changed], env);
    assert.equal(plan.code, 2);
    assert.match(plan.stdout, /~ stream JOBS \(update\)/);
    assert.match(plan.stdout, /max_msgs: 100000 -> 50000/);

    const start = await runCli(["start", "--config", changed, "--functions", FIXTURE_FUNCTIONS], env, { timeoutMs: 30_000 });
    assert.equal(start.code, 1);
    assert.match(start.stderr, /HOST_ERR_STREAM_DRIFT/);
    assert.match(start.stderr, /host streams apply/);
    assert.equal((await nats.jsm.streams.info("JOBS")).config.max_msgs, 100_000, "start changed the stream without --apply");

    const host = startCli(hooks, ["start", "--apply", "--config", changed, "--functions", FIXTURE_FUNCTIONS], { ...env, LOG_LEVEL: "info" });
    await host.waitForLog("all workers ready", (l) => l.msg === "all workers ready");
    assert.equal((await nats.jsm.streams.info("JOBS")).config.max_msgs, 50_000);
    const stopped = await host.stop("SIGTERM");
    assert.equal(stopped.code, 0);
    // put the fixtures' limits back for the next suites
    assert.equal((await runCli(["streams", "apply", ...fixtures], env)).code, 0);
  });

  it("refuses an immutable change (retention) with a clear error", async () => {
    const dir = tmp("cfg");
    const file = join(dir, "streams.config.ts");
    writeFileSync(file, `export default { service: { name: "fixtures" }, streams: [{ name: "JOBS", subjects: ["jobs.>"], retention: "limits" }] };\n`);
    const apply = await runCli(["streams", "apply", "--config", file], env);
    assert.equal(apply.code, 1);
    assert.match(apply.stderr, /JOBS\.retention cannot change in place/);
  });

  it("stops start-up on a bad function file, naming the file and the cause", async () => {
    const dir = tmp("fns");
    mkdirSync(join(dir, "a"));
    writeFileSync(join(dir, "a", "good.ts"), `export default 1;\n`);
    const broken = join(dir, "a", "broken.ts");
    writeFileSync(broken, `export default { this is not typescript\n`);
    const start = await runCli(["start", "--config", FIXTURE_CONFIG, "--functions", dir], env, { timeoutMs: 30_000 });
    assert.equal(start.code, 1);
    // files load in sorted order: broken.ts comes before good.ts
    assert.match(start.stderr, new RegExp(broken.replaceAll("/", "\\/")));
    assert.match(start.stderr, /HOST_ERR_FUNCTION_LOAD/);

    writeFileSync(broken, `export const notDefault = 1;\n`);
    const again = await runCli(["start", "--config", FIXTURE_CONFIG, "--functions", dir], env, { timeoutMs: 30_000 });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /broken\.ts.*default export|default export.*broken\.ts/s);
  });
});

describe("host dlq and status", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let env: Record<string, string>;
  before(async () => {
    nats = await startTestNats(hooks);
    env = { NATS_URL: nats.url, LOG_LEVEL: "warn" };
    const host = startCli(hooks, ["start", "--apply", ...fixtures], { ...env, LOG_LEVEL: "info" });
    await host.waitForLog("ready", (l) => l.msg === "all workers ready");
  });

  it("round-trips a dead letter: ls, show, replay through the function, not swallowed by dedup", async () => {
    const enc = new TextEncoder();
    const ack = await nats.js.publish("jobs.record", enc.encode('{"id":"g1","behavior":"gate"}'), { msgID: "gate-1" });
    const ls = await waitFor("dead letter listed", async () => {
      const r = await runCli(["dlq", "ls", "--json", ...fixtures], env);
      const list = JSON.parse(r.stdout) as { seq: number; sourceSeq: number; reason: string; fn: string; data: string }[];
      return list.find((d) => d.sourceSeq === ack.seq);
    });
    assert.equal(ls.fn, "jobs/record");
    assert.equal(ls.reason, "HOST_ERR_NON_RETRIABLE");
    assert.equal(ls.data, '{"id":"g1","behavior":"gate"}');

    const table = await runCli(["dlq", "ls", ...fixtures], env);
    assert.match(table.stdout, /HOST_ERR_NON_RETRIABLE\s+1\s+JOBS:\d+ jobs\.record\s+gate g1 is closed/);
    const show = JSON.parse((await runCli(["dlq", "show", String(ls.seq), ...fixtures], env)).stdout);
    assert.equal(show.error.message, "gate g1 is closed");
    assert.equal(show.msgId, "gate-1");

    // fix the cause, then replay
    const kv = await new Kvm(nats.nc).open("fixture_state");
    await kv.put("gate.g1", "open");
    const replay = await runCli(["dlq", "replay", String(ls.seq), ...fixtures], env);
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, /replayed dead letter/);
    const receipts = await waitFor("receipt after replay", async () => {
      const r = await readSubject(nats.jsm, "OUT", "out.record.g1");
      return r.length ? r : undefined;
    });
    assert.equal(receipts.length, 1);
    // the replayed dead letter is gone, and the original msg id is still inside the dedup window
    const after = JSON.parse((await runCli(["dlq", "ls", "--json", ...fixtures], env)).stdout) as { seq: number }[];
    assert.ok(!after.some((d) => d.seq === ls.seq));
    const dup = await nats.js.publish("jobs.record", enc.encode('{"id":"g1","behavior":"gate"}'), { msgID: "gate-1" });
    assert.equal(dup.duplicate, true, "the original msg id had left the dedup window, so the test proves nothing");
  });

  it("purges only with --force", async () => {
    const enc = new TextEncoder();
    await nats.js.publish("jobs.record", enc.encode("not json"));
    await waitFor("a dead letter", async () => (await nats.jsm.streams.info("DEAD_LETTERS")).state.messages > 0 || undefined);
    const refused = await runCli(["dlq", "purge", ...fixtures], env);
    assert.equal(refused.code, 64);
    assert.ok((await nats.jsm.streams.info("DEAD_LETTERS")).state.messages > 0);
    const purged = await runCli(["dlq", "purge", "--fn", "jobs/record", "--force", ...fixtures], env);
    assert.equal(purged.code, 0);
    assert.equal((await nats.jsm.streams.info("DEAD_LETTERS")).state.messages, 0);
  });

  it("status shows pending, dead letters, throughput and latency per function", async () => {
    const enc = new TextEncoder();
    await nats.js.publish("jobs.record", enc.encode("{broken"));
    for (let i = 0; i < 20; i++) await nats.js.publish("jobs.record", enc.encode(JSON.stringify({ id: `s${i}` })));
    await waitFor("handled", async () => (await readSubject(nats.jsm, "OUT", "out.record.s19")).length > 0 || undefined);
    const r = await runCli(["status", "--json", "--interval", "200", ...fixtures], env);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { workers: number; functions: { fn: string; workers: number; pending: number; ackPending: number; deadLetters: number; handled: number; p50Ms: number; avgMs: number }[] };
    assert.equal(report.workers, 1);
    const rec = report.functions.find((f) => f.fn === "jobs/record")!;
    assert.equal(rec.workers, 1);
    assert.equal(rec.pending, 0);
    assert.equal(rec.ackPending, 0);
    assert.equal(rec.deadLetters, 1);
    assert.ok(rec.handled >= 21);
    assert.ok(rec.p50Ms > 0 && rec.avgMs > 0);
    const table = await runCli(["status", ...fixtures], env);
    assert.match(table.stdout, /FUNCTION\s+STATE\s+TRIGGER\s+SUBJECT\s+WORKERS\s+PENDING/);
    assert.match(table.stdout, /reqs\/echo\s+running\s+request\s+req\.echo/);
    const health = await runCli(["health", ...fixtures], env);
    assert.equal(health.code, 0, health.stdout + health.stderr);
    assert.match(health.stdout, /^ok \(1 worker\(s\) answering\)/);
  });
});
