import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { needsRoot, startTestDocker, type TestDocker } from "../testing/docker.ts";
import { startTestNats, suiteScope, type TestNats } from "../testing/nats.ts";
import { startTestDatabase, type TestDatabase } from "../testing/postgres.ts";
import { runCli, startCli, type CliProcess } from "../testing/cli.ts";
import { readSubject, waitFor } from "./helpers/host.ts";

// The worker running an agent's orchestrator is killed with SIGKILL mid-window (`host start`: the
// supervisor starts a new one). The agent's container runs on; the new worker's orchestrator adopts
// it once the dead one's lease lapses, and stops it at the window's end: one execution, started
// once, recorded once.

const enc = (v: unknown) => JSON.stringify(v);

describe("faults: the orchestrator's worker SIGKILLed mid-window", { skip: needsRoot }, () => {
  const hooks = suiteScope(after);
  let engine: TestDocker;
  let nats: TestNats;
  let db: TestDatabase;
  let host: CliProcess;
  let workspaces: string;

  before(async () => {
    [engine, nats, db] = await Promise.all([startTestDocker(hooks), startTestNats(hooks, { auth: true }), startTestDatabase(hooks)]);
    workspaces = mkdtempSync(join(tmpdir(), "syntropism-orch-crash-"));
    hooks.after(async () => rmSync(workspaces, { recursive: true, force: true }));
    const env = {
      NATS_URL: nats.url,
      NATS_AUTH_DIR: nats.auth!.authority.dir,
      DATABASE_URL: db.url,
      ECONOMY_WINDOW_MS: "15000",
      SANDBOX_DRIVER: "docker",
      DOCKER_HOST: `unix://${engine.socketPath}`,
      AGENT_WORKSPACES: workspaces,
      AGENT_STOP_GRACE_MS: "500",
      LOG_LEVEL: "info",
    };
    const applied = await runCli(["streams", "apply"], { ...env, NATS_CREDS: nats.auth!.credsFile("admin") });
    assert.equal(applied.code, 0, applied.stderr);
    host = startCli(hooks, ["start", "--workers", "1"], { ...env, NATS_CREDS: nats.auth!.credsFile("service") });
    await host.waitForLog("ready", (l) => l.msg === "all workers ready", 90_000);
  });

  it("the agent runs on, is adopted by the new worker and stopped at its window's end, once", async () => {
    await nats.js.publish("admin.genesis", enc({ agent_id: "survivor", credits: 100 }));
    await waitFor("its workspace", async () => ((await db.sql`SELECT 1 FROM workspaces WHERE agent_id = 'survivor'`).length ? true : undefined), 30_000);
    writeFileSync(join(workspaces, "survivor", "agent.mjs"), 'console.log("working"); setInterval(() => {}, 1000);\n');
    await nats.js.publish("market.bid.survivor", enc({ bundle: { cpu: 500, memory: 128 }, price: 2 }));
    const running = await waitFor("the agent running", async () => (await db.sql<{ id: string; ends_at: Date }[]>`SELECT id, ends_at FROM executions WHERE agent_id = 'survivor' AND status = 'running'`)[0], 60_000);

    const worker = host.logs().filter((l) => l.msg === "worker ready").map((l) => l.pid as number).at(-1)!;
    process.kill(worker, "SIGKILL");
    const [alive] = await engine.docker.listContainers({ filters: { label: [`syntropism.execution=${running.id}`] } });
    assert.ok(alive, "the container outlives its orchestrator");

    await host.waitForLog("adopted", (l) => l.msg === "adopted a running agent" && String(l.execution_id) === String(running.id), 40_000);
    const done = await waitFor("the execution's end", async () => {
      const [r] = await db.sql<{ status: string; reason: string; n: number }[]>`SELECT status, reason FROM executions WHERE id = ${running.id} AND status NOT IN ('pending', 'running')`;
      return r;
    }, 40_000);
    assert.deepEqual([done.status, done.reason], ["killed", "TIMEOUT"]);
    assert.ok(Date.now() >= running.ends_at.getTime(), "stopped at the window's end, not before");
    const rows = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM executions WHERE agent_id = 'survivor'`;
    assert.equal(rows[0]!.n, 1);
    const started = await waitFor("the events on AUDIT", async () => {
      const s = (await readSubject(nats.jsm, "AUDIT", "system.execution_started")).length;
      const f = (await readSubject(nats.jsm, "AUDIT", "system.execution_finished")).length;
      return f >= 1 ? { s, f } : undefined;
    }, 20_000);
    assert.deepEqual(started, { s: 1, f: 1 }, "started once, finished once");
  });
});
