import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { needsRoot, startTestDocker, type TestDocker } from "../testing/docker.ts";
import { startTestNats, suiteScope, type TestNats } from "../testing/nats.ts";
import { DockerDriver } from "../sandbox/docker.ts";
import { SandboxErrorCode } from "../sandbox/errors.ts";
import { ensureImage, planImage } from "../sandbox/image.ts";
import type { LaunchSpec, Limits } from "../sandbox/types.ts";

// The Docker driver against a private engine (testing/docker.ts) and a real nats-server with the
// project's authentication: what the limits and flags stop, measured on real containers. One
// engine and one image build for the suite; each container is short.

const LIMITS: Limits = { memoryMiB: 128, cpuMillicores: 1000, pids: 64 };

describe("docker sandbox", { skip: needsRoot }, () => {
  const scope = suiteScope(after);
  let engine: TestDocker;
  let nats: TestNats;
  let driver: DockerDriver;
  let image: string;
  const dirs: string[] = [];
  let seq = 0;
  const tmp = (prefix: string) => {
    const d = mkdtempSync(prefix);
    dirs.push(d);
    return d;
  };

  before(async () => {
    [engine, nats] = await Promise.all([startTestDocker(scope), startTestNats(scope, { auth: true })]);
    const t0 = performance.now();
    const built = await ensureImage(engine.docker, planImage());
    image = built.tag;
    console.log(`# image ${image} built in ${Math.round(performance.now() - t0)} ms`);
    const relayRoot = mkdtempSync("/tmp/sr-");
    dirs.push(relayRoot);
    driver = new DockerDriver({ docker: engine.docker, image, relayRoot });
    scope.after(async () => {
      await driver.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });
  });

  /** A workspace with env.json and the agent's credentials, and `program` as agent.mjs if given. */
  async function workspace(agentId: string, program?: string): Promise<string> {
    const ws = mkdtempSync("/tmp/sw-");
    dirs.push(ws);
    const c = await nats.auth!.authority.agentCredentials(agentId, new Date(Date.now() + 600_000));
    mkdirSync(join(ws, ".nats"), { mode: 0o700 });
    writeFileSync(join(ws, ".nats", "agent.creds"), c.creds, { mode: 0o600 });
    writeFileSync(
      join(ws, "env.json"),
      JSON.stringify({ agent_id: agentId, credits: 100, window_id: 7, window_end: new Date(Date.now() + 60_000).toISOString(), prices: {}, nats_url: "nats://127.0.0.1:4222", credentials_file: "/workspace/.nats/agent.creds", inbox_prefix: c.inboxPrefix, correlation_id: "corr-1" }),
    );
    if (program !== undefined) writeFileSync(join(ws, "agent.mjs"), program);
    return ws;
  }

  const spec = (ws: string, over: Partial<LaunchSpec> = {}): LaunchSpec => ({
    executionId: `exec-${++seq}`,
    agentId: "alice",
    windowId: 7,
    correlationId: "corr-1",
    workspace: ws,
    limits: LIMITS,
    natsUrl: nats.url,
    ...over,
  });

  /** The last line of output that parses as JSON. */
  const result = (tail: string) => JSON.parse(tail.split("\n").filter((l) => l.startsWith("{")).at(-1)!) as Record<string, unknown>;

  it("the default agent reaches NATS through the relay with its own credentials, and exits 0", async () => {
    const ws = await workspace("alice");
    const events: { subject: string; at: number; body: unknown }[] = [];
    const sub = nats.nc.subscribe("agent.alice.>", { callback: (_e, m) => void events.push({ subject: m.subject, at: performance.now(), body: m.json() }) });
    const balance = nats.nc.subscribe("economic.balance.alice", { callback: (_e, m) => void m.respond(JSON.stringify({ agent_id: "alice", balance: 100, reserved: 0, available: 100 })) });
    await nats.nc.flush();
    const lines: string[] = [];
    const t0 = performance.now();
    const sb = await driver.launch(spec(ws, { onOutput: (l) => lines.push(l) }));
    const started = performance.now() - t0;
    const fin = await sb.wait();
    sub.unsubscribe();
    balance.unsubscribe();
    assert.equal(fin.reason, "exit", fin.outputTail);
    assert.equal(fin.exitCode, 0);
    assert.equal(fin.oomKilled, false);
    assert.deepEqual(events.map((e) => e.subject), ["agent.alice.cognitive_cycle_started", "agent.alice.cognitive_cycle_completed"]);
    assert.deepEqual(events[0]!.body, { agent_id: "alice", window_id: 7 });
    const out = result(fin.outputTail);
    assert.deepEqual(out.balance, { agent_id: "alice", balance: 100, reserved: 0, available: 100 });
    assert.ok(lines.some((l) => l.includes('"balance"')), "onOutput saw the line");
    assert.ok(fin.cpuMs! > 0 && fin.peakMemoryBytes! > 1e6, JSON.stringify(fin));
    await assert.rejects(engine.docker.getContainer(sb.id).inspect(), /no such container/i, "removed after wait");
    console.log(`# container created+started ${Math.round(started)} ms; first NATS message ${Math.round(events[0]!.at - t0)} ms after launch; cpu ${Math.round(fin.cpuMs!)} ms, peak ${(fin.peakMemoryBytes! / 2 ** 20).toFixed(1)} MiB`);
  });

  it("reaches nothing but the relay: host ports and public addresses are refused, the root filesystem is read-only", async () => {
    const program = `
      import { connect as tcp } from "node:net";
      import { writeFileSync } from "node:fs";
      import { connect } from "@syntropism/agent";
      const reach = (host, port) => new Promise((done) => {
        const s = tcp({ host, port, timeout: 2000 });
        s.on("connect", () => { s.destroy(); done("connected"); });
        s.on("timeout", () => { s.destroy(); done("timeout"); });
        s.on("error", (e) => done(e.code));
      });
      const write = (p) => { try { writeFileSync(p, "x"); return "ok"; } catch (e) { return e.code; } };
      const agent = await connect();
      const rtt = performance.now(); await agent.nc.flush(); const flushMs = performance.now() - rtt;
      await agent.close();
      console.log(JSON.stringify({
        nats: flushMs < 2000 ? "ok" : "slow",
        pg: await reach("127.0.0.1", 5432),
        hostNats: await reach("127.0.0.1", ${nats.port}),
        public: await reach("1.1.1.1", 53),
        root: write("/x"), etc: write("/etc/passwd"), tmp: write("/tmp/x"), workspace: write("/workspace/out.txt"),
        uid: process.getuid(),
      }));
    `;
    const ws = await workspace("alice", program);
    const fin = await (await driver.launch(spec(ws))).wait();
    assert.equal(fin.exitCode, 0, fin.outputTail);
    assert.deepEqual(result(fin.outputTail), {
      nats: "ok",
      pg: "ECONNREFUSED",
      hostNats: "ECONNREFUSED",
      public: "ENETUNREACH",
      root: "EROFS",
      etc: "EROFS",
      tmp: "ok",
      workspace: "ok",
      uid: 65534,
    });
    assert.equal(readFileSync(join(ws, "out.txt"), "utf8"), "x", "the workspace file is on the host");
    assert.equal(statSync(join(ws, "out.txt")).uid, 65534);
  });

  it("memory: past its limit the agent is OOM-killed (exit 137, reason oom)", async () => {
    const ws = await workspace("alice", `const keep = []; for (let i = 0; i < 30; i++) keep.push(Buffer.alloc(10 * 2 ** 20, 1)); console.log("survived");`);
    const fin = await (await driver.launch(spec(ws))).wait();
    assert.equal(fin.exitCode, 137, fin.outputTail);
    assert.equal(fin.oomKilled, true);
    assert.equal(fin.reason, "oom");
    assert.doesNotMatch(fin.outputTail, /survived/);
    assert.equal(fin.peakMemoryBytes, 128 * 2 ** 20, "an OOM kill means the limit was reached");
  });

  it("CPU: a 3 s busy loop at 500 millicores gets about half a core", async () => {
    const ws = await workspace("alice", `const end = Date.now() + 3000; let n = 0; while (Date.now() < end) n++; console.log(JSON.stringify({ n }));`);
    const t0 = performance.now();
    const fin = await (await driver.launch(spec(ws, { limits: { ...LIMITS, cpuMillicores: 500 } }))).wait();
    const wall = performance.now() - t0;
    assert.equal(fin.exitCode, 0, fin.outputTail);
    console.log(`# 3 s busy loop at 500 millicores: ${Math.round(fin.cpuMs!)} ms of CPU (${(fin.cpuMs! / 3000).toFixed(2)} core), wall ${Math.round(wall)} ms`);
    // the quota caps it: unlimited, the loop would use ~3,000 ms; the lower bound is loose, since
    // another suite may share the two cores
    assert.ok(fin.cpuMs! > 600 && fin.cpuMs! < 2100, `cpuMs ${fin.cpuMs}`);
  });

  it("processes: a fork bomb stops at the pids limit; the host and the engine carry on", async () => {
    const program = `
      import { spawn } from "node:child_process";
      let started = 0, refused = 0;
      for (let i = 0; i < 100; i++) {
        try {
          const c = spawn(process.execPath, ["-e", "setTimeout(() => {}, 4000)"], { stdio: "ignore" });
          c.on("spawn", () => started++);
          c.on("error", () => refused++);
        } catch { refused++; }
      }
      setTimeout(() => { console.log(JSON.stringify({ started, refused })); process.exit(0); }, 2500);
    `;
    const ws = await workspace("alice", program);
    const fin = await (await driver.launch(spec(ws, { limits: { ...LIMITS, memoryMiB: 512, pids: 48 } }))).wait();
    // the container may survive (children refused with EAGAIN) or die of it; either way it is contained
    if (fin.exitCode === 0) {
      const r = result(fin.outputTail) as { started: number; refused: number };
      console.log(`# fork bomb at pids 48: ${r.started} children started, ${r.refused} refused`);
      assert.ok(r.started < 48, `started ${r.started}`);
      assert.ok(r.refused > 0);
    }
    await engine.docker.ping();
    const next = await (await driver.launch(spec(await workspace("alice"), { limits: LIMITS }))).wait();
    assert.equal(next.exitCode, 0, "the next container runs as usual");
  });

  it("stop(grace): SIGTERM is honoured; an agent that ignores it is killed after the grace", async () => {
    const polite = await workspace("alice", `process.on("SIGTERM", () => { console.log("bye"); process.exit(0); }); console.log("up"); setInterval(() => {}, 1000);`);
    const lines: string[] = [];
    const sb = await driver.launch(spec(polite, { onOutput: (l) => lines.push(l) }));
    await waitForLine(lines, "up");
    await sb.stop(5000);
    const fin = await sb.wait();
    assert.equal(fin.reason, "stopped");
    assert.equal(fin.exitCode, 0);
    assert.match(fin.outputTail, /bye/);

    const stubborn = await workspace("alice", `process.on("SIGTERM", () => console.log("no")); console.log("up"); setInterval(() => {}, 1000);`);
    const lines2: string[] = [];
    const sb2 = await driver.launch(spec(stubborn, { onOutput: (l) => lines2.push(l) }));
    await waitForLine(lines2, "up");
    const t0 = performance.now();
    await sb2.stop(600);
    const took = performance.now() - t0;
    const fin2 = await sb2.wait();
    assert.equal(fin2.reason, "stopped");
    assert.equal(fin2.exitCode, 137);
    assert.match(fin2.outputTail, /no/);
    assert.ok(took >= 550, `killed after ${took} ms`);
  });

  it("running(labels) finds a container again after a restart, and attach() waits for it", async () => {
    const ws = await workspace("alice", `console.log("working"); setTimeout(() => console.log("done"), 1500);`);
    const sb = await driver.launch(spec(ws, { labels: { "test.case": "refind" } }));
    const again = new DockerDriver({ docker: engine.docker, image });
    const found = await again.running({ "test.case": "refind" });
    assert.equal(found.length, 1);
    assert.equal(found[0]!.id, sb.id);
    assert.equal(found[0]!.state, "running");
    assert.equal(found[0]!.labels["syntropism.agent"], "alice");
    assert.equal(found[0]!.labels["syntropism.window"], "7");
    const fin = await found[0]!.attach().wait();
    assert.equal(fin.exitCode, 0);
    assert.match(fin.outputTail, /working\ndone/);
    assert.deepEqual(await again.running({ "test.case": "refind" }), []);
    await again.close();
    await sb.wait().catch(() => {});
  });

  it("without an engine: probe says why, launch rejects with SANDBOX_ENGINE_UNAVAILABLE; an unknown image with SANDBOX_IMAGE_MISSING", async () => {
    const none = new DockerDriver({ dockerHost: "unix:///tmp/no-such-engine.sock", image, relayRoot: tmp("/tmp/sr-") });
    const p = await none.probe();
    assert.equal(p.ok, false);
    assert.match((p as { reason: string }).reason, /\/tmp\/no-such-engine\.sock: ENOENT/);
    const ws = await workspace("alice");
    await assert.rejects(none.launch(spec(ws)), (err: { code?: string }) => err.code === SandboxErrorCode.EngineUnavailable);
    await none.close();

    const noImage = new DockerDriver({ docker: engine.docker, image: "syntropism-agent:missing", relayRoot: tmp("/tmp/sr-") });
    assert.match(((await noImage.probe()) as { reason: string }).reason, /no image syntropism-agent:missing/);
    await assert.rejects(noImage.launch(spec(ws)), (err: { code?: string }) => err.code === SandboxErrorCode.ImageMissing);
    await assert.rejects(driver.launch(spec(ws, { limits: { memoryMiB: 4, cpuMillicores: 500, pids: 64 } })), (err: { code?: string }) => err.code === SandboxErrorCode.InvalidSpec);
    await noImage.close();
  });
});

async function waitForLine(lines: string[], line: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!lines.includes(line)) {
    if (Date.now() > deadline) throw new Error(`no line ${JSON.stringify(line)} within 15 s: ${lines.join(" | ")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
