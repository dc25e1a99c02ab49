import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestNats, suiteScope, type TestNats } from "../testing/nats.ts";
import { ProcessDriver } from "../sandbox/process.ts";
import { SandboxErrorCode } from "../sandbox/errors.ts";
import type { LaunchSpec } from "../sandbox/types.ts";

// The process driver: the same launcher, SDK and default agent as the image, as a plain child
// process that dials the NATS server itself. Nothing is enforced (isolated: false).

describe("process sandbox", () => {
  const scope = suiteScope(after);
  let nats: TestNats;
  const driver = new ProcessDriver();
  const dirs: string[] = [];
  let seq = 0;

  before(async () => {
    nats = await startTestNats(scope, { auth: true });
    scope.after(async () => {
      await driver.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });
  });

  async function workspace(agentId: string, program?: string): Promise<string> {
    const ws = mkdtempSync(join(tmpdir(), "syntropism-ws-"));
    dirs.push(ws);
    const c = await nats.auth!.authority.agentCredentials(agentId, new Date(Date.now() + 600_000));
    mkdirSync(join(ws, ".nats"));
    writeFileSync(join(ws, ".nats", "agent.creds"), c.creds, { mode: 0o600 });
    // the same env.json as for a container: the SDK finds /workspace/… in the workspace, and the driver points it at the server
    writeFileSync(join(ws, "env.json"), JSON.stringify({ agent_id: agentId, window_id: 3, nats_url: "nats://127.0.0.1:4222", credentials_file: "/workspace/.nats/agent.creds", inbox_prefix: c.inboxPrefix, correlation_id: "c" }));
    if (program !== undefined) writeFileSync(join(ws, "agent.mjs"), program);
    return ws;
  }

  const spec = (ws: string, over: Partial<LaunchSpec> = {}): LaunchSpec => ({
    executionId: `p-${++seq}`, agentId: "bob", windowId: 3, correlationId: "c", workspace: ws,
    limits: { memoryMiB: 128, cpuMillicores: 500, pids: 64 }, natsUrl: nats.url, ...over,
  });

  it("runs the default agent: its events reach NATS with its credentials, exit 0", async () => {
    assert.equal(driver.isolated, false);
    assert.deepEqual(await driver.probe(), { ok: true });
    const subjects: string[] = [];
    const sub = nats.nc.subscribe("agent.bob.>", { callback: (_e, m) => void subjects.push(m.subject) });
    const bal = nats.nc.subscribe("economic.balance.bob", { callback: (_e, m) => void m.respond(JSON.stringify({ agent_id: "bob", balance: 5 })) });
    await nats.nc.flush();
    const lines: [string, string][] = [];
    const sb = await driver.launch(spec(await workspace("bob"), { onOutput: (l, s) => lines.push([s, l]) }));
    const fin = await sb.wait();
    sub.unsubscribe();
    bal.unsubscribe();
    assert.equal(fin.exitCode, 0, fin.outputTail);
    assert.equal(fin.reason, "exit");
    assert.deepEqual(subjects, ["agent.bob.cognitive_cycle_started", "agent.bob.cognitive_cycle_completed"]);
    assert.match(fin.outputTail, /"balance":\{"agent_id":"bob","balance":5\}/);
    assert.ok(lines.some(([s, l]) => s === "stdout" && l.includes("balance")));
  });

  it("an agent.mjs in the workspace runs instead, with the SDK by name; a crash is its exit status and stderr", async () => {
    const ws = await workspace("bob", `import { loadEnv } from "@syntropism/agent"; console.log(loadEnv().agent_id); throw new Error("boom");`);
    const fin = await (await driver.launch(spec(ws))).wait();
    assert.equal(fin.exitCode, 1);
    assert.match(fin.outputTail, /^bob$/m);
    assert.match(fin.outputTail, /Error: boom/);
  });

  it("stop(grace): SIGTERM, then SIGKILL; running() finds it by labels until then", async () => {
    const ws = await workspace("bob", `process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000);`);
    const lines: string[] = [];
    const sb = await driver.launch(spec(ws, { labels: { case: "stop" }, onOutput: (l) => lines.push(l) }));
    while (!lines.includes("up")) await new Promise((r) => setTimeout(r, 20));
    const found = await driver.running({ case: "stop" });
    assert.deepEqual(found.map((f) => f.id), [sb.id]);
    assert.equal(found[0]!.labels["syntropism.agent"], "bob");
    const t0 = performance.now();
    await sb.stop(300);
    assert.ok(performance.now() - t0 >= 280);
    const fin = await sb.wait();
    assert.equal(fin.reason, "stopped");
    assert.equal(fin.exitCode, 137);
    assert.deepEqual(await driver.running({ case: "stop" }), []);
  });

  it("refuses a workspace that does not exist and a NATS URL it cannot dial", async () => {
    await assert.rejects(driver.launch(spec("/nonexistent/ws")), (e: { code?: string }) => e.code === SandboxErrorCode.InvalidSpec);
    await assert.rejects(driver.launch(spec(await workspace("bob"), { natsUrl: "http://x" })), (e: { code?: string }) => e.code === SandboxErrorCode.InvalidSpec);
  });
});
