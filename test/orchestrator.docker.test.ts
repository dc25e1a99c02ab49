import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { needsRoot, startTestDocker, type TestDocker } from "../testing/docker.ts";
import { suiteScope } from "../testing/nats.ts";
import { waitFor } from "./helpers/host.ts";
import { orchestratorStack } from "./helpers/orchestrator.ts";

// The orchestrator with real containers on a private Docker engine: winners run with the memory and
// CPU they won, an agent past its memory is killed (OOM), one past its window is stopped (TIMEOUT),
// and a host that stops mid-window leaves its agent running for the next host, which adopts it
// rather than starting it again.


describe("the orchestrator runs winners in Docker", { skip: needsRoot }, () => {
  const hooks = suiteScope(after);
  let engine: TestDocker;
  let s: Awaited<ReturnType<typeof orchestratorStack>>;

  before(async () => {
    engine = await startTestDocker(hooks);
    s = await orchestratorStack(hooks, { SANDBOX_DRIVER: "docker", DOCKER_HOST: `unix://${engine.socketPath}`, ECONOMY_WINDOW_MS: "4000" });
    await s.fund(["dok", "dhog", "dloop"]);
    writeFileSync(join(s.workspaces, "dhog", "agent.mjs"), 'const a = []; console.log("eating"); for (;;) a.push(Buffer.alloc(8 * 1024 * 1024, 1));\n');
    writeFileSync(join(s.workspaces, "dloop", "agent.mjs"), 'console.log("looping"); setInterval(() => {}, 1000);\n');
    await s.bid("dok", 500, 128, 2);
    await s.bid("dhog", 500, 96, 2);
    await s.bid("dloop", 500, 128, 2);
  });

  it("runs the default agent in a container with exactly what it won: succeeded", async () => {
    const e = await s.execution("dok");
    assert.deepEqual([e.status, e.reason, e.exit_code, e.sandbox], ["succeeded", "EXIT", 0, "docker"], e.output_tail ?? "");
    assert.deepEqual(e.limits, { memoryMiB: 128, cpuMillicores: 500, pids: 64 });
    assert.match(e.output_tail ?? "", /"agent_id":"dok".*"balance":\{"agent_id":"dok"/, "it reached the ledger through the relay, as itself");
    assert.ok((e.usage.cpu_ms ?? 0) > 0 && (e.usage.memory_peak_mb ?? 0) > 0, JSON.stringify(e.usage));
    const [c] = await engine.docker.listContainers({ all: true, filters: { label: [`syntropism.execution=${e.id}`] } });
    assert.equal(c, undefined, "the container was removed once recorded");
  });

  it("kills an agent past the memory it paid for: killed, OOM, exit 137", async () => {
    const e = await s.execution("dhog");
    assert.deepEqual([e.status, e.reason, e.exit_code], ["killed", "OOM", 137], e.output_tail ?? "");
  });

  it("a host stopped mid-window leaves its agent running; the next host adopts it and stops it at the window's end (TIMEOUT), once", async () => {
    const running = await s.execution("dloop", false);
    await waitFor("dloop running", async () => ((await s.db.sql`SELECT status FROM executions WHERE id = ${running.id}`)[0]!.status === "running" ? true : undefined), 20_000);
    await s.host.stop();
    const [alive] = await engine.docker.listContainers({ filters: { label: [`syntropism.execution=${running.id}`] } });
    assert.ok(alive, "the agent kept running while no host watched it");
    await s.start();
    const e = await s.execution("dloop");
    assert.equal(String(e.id), String(running.id));
    assert.deepEqual([e.status, e.reason], ["killed", "TIMEOUT"], e.output_tail ?? "");
    const rows = await s.db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM executions WHERE agent_id = 'dloop'`;
    assert.equal(rows[0]!.n, 1, "adopted, not started again");
  });

  it("with the engine gone, a winner's execution fails with the reason and the host keeps running", async () => {
    await engine.stop();
    await s.fund(["dlate"]);
    await s.bid("dlate", 500, 128, 2);
    const e = await s.execution("dlate");
    const [row] = await s.db.sql<{ error: string }[]>`SELECT error FROM executions WHERE id = ${e.id}`;
    assert.deepEqual([e.status, e.reason], ["failed", "SANDBOX"]);
    assert.match(row!.error, /engine|docker|ENOENT|connect/i);
    // the economy goes on: a balance request is answered
    assert.equal((await s.nats.nc.request("economic.balance.dlate", "", { timeout: 5000 })).json<{ agent_id: string }>().agent_id, "dlate");
  });
});
