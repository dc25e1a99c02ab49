import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { suiteScope, type TestNats } from "../testing/nats.ts";
import type { TestDatabase } from "../testing/postgres.ts";
import { readSubject, waitFor } from "./helpers/host.ts";
import { orchestratorStack } from "./helpers/orchestrator.ts";

// The orchestrator end to end with the process driver (the Docker driver's own suite is
// orchestrator.docker.test.ts): an agent that wins a bundle runs in the window it paid for with
// its own credentials, and the execution is recorded however it ends; one that lost never runs.

describe("the orchestrator runs winners (process driver)", () => {
  const hooks = suiteScope(after);
  let s: Awaited<ReturnType<typeof orchestratorStack>>;
  let nats: TestNats;
  let db: TestDatabase;

  before(async () => {
    s = await orchestratorStack(hooks, { SANDBOX_DRIVER: "process" });
    ({ nats, db } = s);
    await s.fund(["ok1", "crash1", "loop1", "poor1"]);
    writeFileSync(join(s.workspaces, "crash1", "agent.mjs"), 'console.log("giving up"); process.exit(3);\n');
    writeFileSync(join(s.workspaces, "loop1", "agent.mjs"), 'console.log("thinking forever"); setInterval(() => {}, 1000);\n');
    // supply is 2000 millicores: the three at 600 fit, poor1's 1,200 at a lower price does not
    await s.bid("ok1", 600, 128, 2);
    await s.bid("crash1", 600, 128, 2);
    await s.bid("loop1", 600, 128, 2);
    await s.bid("poor1", 1200, 128, 1.5);
  });

  it("runs the default agent with its own credentials in the window it won: succeeded, exit 0, events on AUDIT", async () => {
    const e = await s.execution("ok1");
    assert.equal(e.status, "succeeded", JSON.stringify(e, (_k, x) => (typeof x === "bigint" ? String(x) : x)));
    assert.equal(e.reason, "EXIT");
    assert.equal(e.exit_code, 0);
    assert.equal(e.sandbox, "process");
    assert.deepEqual(e.limits, { memoryMiB: 128, cpuMillicores: 600, pids: 64 });
    // it asked the ledger for its balance through NATS, as itself
    assert.match(e.output_tail ?? "", /"agent_id":"ok1".*"balance":\{"agent_id":"ok1","balance":9[0-9.]+/);
    type Ev = { type: string; payload: { execution_id: string; status?: string } };
    // written with the execution's change, published by the outbox relay (within a second or two)
    const mine = await waitFor("execution events on AUDIT", async () => {
      const all = [...(await readSubject(nats.jsm, "AUDIT", "system.execution_started")), ...(await readSubject(nats.jsm, "AUDIT", "system.execution_finished"))].map((m) => m.json<Ev>());
      const found = all.filter((x) => x.payload.execution_id === String(e.id));
      return found.length === 2 ? found : undefined;
    }, 15_000);
    assert.deepEqual(mine.map((x) => x.type), ["execution_started", "execution_finished"]);
    assert.equal(mine[1]!.payload.status, "succeeded");
  });

  it("records a crash as failed with its exit code, and its output", async () => {
    const e = await s.execution("crash1");
    assert.deepEqual([e.status, e.reason, e.exit_code], ["failed", "EXIT", 3]);
    assert.match(e.output_tail ?? "", /giving up/);
  });

  it("stops an agent still running at the end of its window: killed, TIMEOUT", async () => {
    const e = await s.execution("loop1");
    assert.deepEqual([e.status, e.reason], ["killed", "TIMEOUT"]);
    assert.match(e.output_tail ?? "", /thinking forever/);
  });

  it("never starts an agent whose bundle lost, and runs each winner once per window", async () => {
    await s.execution("ok1");
    const rows = await db.sql<{ agent_id: string; n: number }[]>`SELECT agent_id, count(*)::int AS n FROM executions GROUP BY agent_id ORDER BY agent_id`;
    assert.deepEqual(rows.map((r) => [r.agent_id, r.n]), [["crash1", 1], ["loop1", 1], ["ok1", 1]]);
    const lost = (await readSubject(nats.jsm, "AUDIT", "market.bid_lost")).map((m) => m.json<{ payload: { agent_id: string } }>().payload.agent_id);
    assert.ok(lost.includes("poor1"), "poor1's bundle lost");
  });
});
