import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "@nats-io/transport-node";
import { loadConfigFile } from "../host/configFile.ts";
import { collectStatus, healthOf } from "../host/status.ts";
import { applyPlan, planStreams } from "../host/streams.ts";
import type { Host } from "../host/runtime.ts";
import { startRestartableNats, suiteScope, type RestartableNats } from "./helpers/nats.ts";
import { FIXTURE_CONFIG, readSubject, startHost, waitFor } from "./helpers/host.ts";

// Every trigger's loop survives the faults of its pull or subscription — a server killed -9 and
// restarted, a frozen server (heartbeats missed), its consumer deleted, its stream deleted and
// recreated — shows `degraded` while it is down, and takes work again after.

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));

/** Publishes until the server acknowledges (it may be down or restarting). */
async function publishAcked(nats: RestartableNats, subject: string, body: unknown, msgID: string): Promise<void> {
  await waitFor(`ack for ${msgID}`, async () => {
    await nats.js.publish(subject, json(body), { msgID, timeout: 2000 });
    return true;
  }, 30_000, 200);
}

async function receipts(nats: RestartableNats, prefix: string): Promise<Set<string>> {
  return new Set((await readSubject(nats.jsm, "OUT", `out.record.${prefix}.>`)).map((m) => m.json<{ id: string }>().id));
}

/** Publishes `n` jobs and waits until each has its receipt. */
async function jobsGoThrough(nats: RestartableNats, prefix: string, n = 10): Promise<void> {
  for (let i = 0; i < n; i++) await publishAcked(nats, "jobs.record", { id: `${prefix}.${i}` }, `${prefix}-${i}`);
  await waitFor(`${n} receipts for ${prefix}`, async () => (await receipts(nats, prefix)).size === n || undefined, 30_000, 100);
}

function loopOf(host: Host, id: string) {
  const fn = host.functions.find((f) => f.id === id);
  assert.ok(fn, `function ${id} is not loaded`);
  return fn.stats.loop;
}

/** Every function's loop takes work again. */
async function allRunning(host: Host): Promise<void> {
  await waitFor("every loop running", () => host.functions.every((f) => f.stats.loop.state === "running") || undefined, 30_000, 50);
}

describe("trigger loops recover", () => {
  const hooks = suiteScope(after);
  let nats: RestartableNats;
  let host: Host;
  before(async () => {
    nats = await startRestartableNats(hooks);
    ({ host } = await startHost(hooks, nats));
  });

  it("pull - a server killed -9 and restarted on its store: every loop resumes, requests are answered", async () => {
    await jobsGoThrough(nats, "kill.before");
    await nats.kill();
    await sleep(1500);
    await nats.restart();
    const back = Date.now();
    await jobsGoThrough(nats, "kill.after");
    const resumedMs = Date.now() - back;
    await allRunning(host);
    const reply = await waitFor("echo answered", async () => (await nats.nc.request("req.echo", json({ text: "hi" }), { timeout: 1000 })).json<{ text: string }>(), 20_000, 100);
    assert.equal(reply.text, "hi");
    // the figure quoted in docs/host.md
    console.log(`# resumed ${resumedMs} ms after the server was back`);
  });

  it("pull - a frozen server (heartbeats missed) shows degraded, then resumes", async () => {
    nats.freeze();
    try {
      const seen = await waitFor("a degraded loop", () => (loopOf(host, "jobs/record").state === "degraded" ? { ...loopOf(host, "jobs/record") } : undefined), 20_000, 50);
      assert.match(seen.error, /./, "a degraded loop says why");
    } finally {
      nats.thaw();
    }
    await jobsGoThrough(nats, "frozen");
    await allRunning(host);
    assert.ok(loopOf(host, "jobs/record").recoveries >= 1);
  });

  it("pull - its consumer deleted: recreated from the definition, work goes on", async () => {
    await nats.jsm.consumers.delete("JOBS", "jobs_record");
    await jobsGoThrough(nats, "noconsumer");
    const ci = await nats.jsm.consumers.info("JOBS", "jobs_record");
    assert.equal(ci.config.filter_subject, "jobs.record");
    await allRunning(host);
  });

  it("pull - its stream deleted: degraded in status and health with the error; recreated: work goes on", async () => {
    const config = await loadConfigFile(FIXTURE_CONFIG);
    await nats.jsm.streams.delete("JOBS");
    await waitFor("degraded", () => (loopOf(host, "jobs/record").state === "degraded" && /JOBS/.test(loopOf(host, "jobs/record").error)) || undefined, 20_000, 50).catch((err) => {
      throw new Error(`${(err as Error).message}; loop: ${JSON.stringify(loopOf(host, "jobs/record"))}`);
    });

    const report = await collectStatus(nats.nc, nats.jsm, config, { intervalMs: 0 });
    const row = report.functions.find((f) => f.fn === "jobs/record");
    assert.equal(row?.state, "degraded");
    assert.match(row!.problems.join("\n"), /JOBS/);
    const health = healthOf(report);
    assert.equal(health.status, "degraded");
    assert.ok(health.degraded.some((d) => d.fn === "jobs/record"));

    await applyPlan(nats.nc, nats.jsm, await planStreams(nats.jsm, config));
    await jobsGoThrough(nats, "newstream");
    await allRunning(host);
    assert.equal(healthOf(await collectStatus(nats.nc, nats.jsm, config, { intervalMs: 0 })).status, "ok");
  });

  it("connection - closed for good: the host is told, so a worker can exit and be replaced", async () => {
    let told: unknown;
    const { host: other } = await startHost(hooks, nats, { onConnectionClosed: (err) => (told = err ?? "closed") });
    await other.nc.close();
    await waitFor("onConnectionClosed", () => told !== undefined || undefined, 5000, 20);
    // a host that stops on purpose is not told
    let toldOnStop = false;
    const { host: third } = await startHost(hooks, nats, { onConnectionClosed: () => (toldOnStop = true) });
    await third.stop();
    await sleep(100);
    assert.equal(toldOnStop, false);
  });

  it("health - ok while every loop runs; down when no worker answers", async () => {
    const config = await loadConfigFile(FIXTURE_CONFIG);
    await allRunning(host);
    assert.equal(healthOf(await collectStatus(nats.nc, nats.jsm, config, { intervalMs: 0 })).status, "ok");
    const lonely = await connect({ servers: nats.url });
    try {
      const { jetstreamManager } = await import("@nats-io/jetstream");
      const report = await collectStatus(lonely, await jetstreamManager(lonely), { ...config, service: { ...config.service, name: "nobody" } }, { intervalMs: 0 });
      assert.equal(healthOf(report).status, "down");
    } finally {
      await lonely.close();
    }
  });
});
