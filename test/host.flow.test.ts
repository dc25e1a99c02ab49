import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { DiscardPolicy } from "@nats-io/jetstream";
import { listDeadLetters } from "../host/deadLetter.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { countSubject, readSubject, startHost, waitFor } from "./helpers/host.ts";
import type { Host } from "../host/runtime.ts";

// Request triggers, service discovery, rate limits and backpressure on one in-process host.

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));

describe("request trigger and $SRV", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  before(async () => {
    nats = await startTestNats(hooks);
    await startHost(hooks, nats);
  });

  it("answers plain JSON with no headers, as `nats req` sends it", async () => {
    const reply = await nats.nc.request("req.echo", '{"text":"hello"}', { timeout: 5000 });
    assert.equal(reply.headers?.get("Nats-Service-Error-Code") ?? "", "");
    assert.deepEqual({ ...reply.json<object>(), pid: 0 }, { text: "hello", length: 5, pid: 0 });
  });

  it("replies a clear 400 error to malformed and invalid requests, and keeps serving", async () => {
    for (const body of ["{oops", "", '{"text":5}', "[]"]) {
      const reply = await nats.nc.request("req.echo", body, { timeout: 5000 });
      assert.equal(reply.headers?.get("Nats-Service-Error-Code"), "400", `body ${JSON.stringify(body)}`);
      const err = reply.json<{ error: { code: string; message: string } }>().error;
      assert.match(err.code, /^HOST_ERR_(MALFORMED_JSON|INVALID_PAYLOAD)$/);
      assert.ok(err.message.length > 0);
    }
    const fatal = await nats.nc.request("req.echo", '{"text":"x","fail":"fatal"}', { timeout: 5000 });
    assert.equal(fatal.headers?.get("Nats-Service-Error-Code"), "400");
    assert.equal(fatal.json<{ error: { message: string } }>().error.message, "refused on purpose");
    const boom = await nats.nc.request("req.echo", '{"text":"x","fail":"boom"}', { timeout: 5000 });
    assert.equal(boom.headers?.get("Nats-Service-Error-Code"), "500");
    assert.equal(boom.json<{ error: { message: string } }>().error.message, "exploded on purpose");
    // classifyError (test/fixtures/streams.config.ts) makes FIXTURE_REFUSED the caller's to fix
    const refused = await nats.nc.request("req.echo", '{"text":"x","fail":"refused"}', { timeout: 5000 });
    assert.equal(refused.headers?.get("Nats-Service-Error-Code"), "400");
    assert.equal(refused.json<{ error: { code: string } }>().error.code, "FIXTURE_REFUSED");
    const ok = await nats.nc.request("req.echo", '{"text":"still here"}', { timeout: 5000 });
    assert.equal(ok.json<{ text: string }>().text, "still here");
  });

  it("lists every function on $SRV.PING|INFO|STATS (what `nats micro ls` asks)", async () => {
    const ping = await nats.nc.request("$SRV.PING", "", { timeout: 2000 });
    assert.equal(ping.json<{ type: string; name: string }>().type, "io.nats.micro.v1.ping_response");
    assert.equal(ping.json<{ name: string }>().name, "fixtures");
    const info = (await nats.nc.request("$SRV.INFO.fixtures", "", { timeout: 2000 })).json<{
      type: string;
      endpoints: { name: string; subject: string; metadata: Record<string, string> }[];
    }>();
    assert.equal(info.type, "io.nats.micro.v1.info_response");
    const fns = info.endpoints.map((e) => e.metadata.function).sort();
    assert.deepEqual(fns, ["jobs/crashy", "jobs/fill", "jobs/limited", "jobs/once", "jobs/record", "jobs/throttled", "jobs/work", "reqs/echo", "sched/tick", "tr/entry", "tr/step1", "tr/step2"]);
    const echo = info.endpoints.find((e) => e.metadata.function === "reqs/echo")!;
    assert.equal(echo.subject, "req.echo");
    const stats = (await nats.nc.request("$SRV.STATS.fixtures", "", { timeout: 2000 })).json<{
      type: string;
      endpoints: { name: string; num_requests: number; num_errors: number }[];
    }>();
    assert.equal(stats.type, "io.nats.micro.v1.stats_response");
    const s = stats.endpoints.find((e) => e.name === "reqs_echo")!;
    assert.ok(s.num_requests >= 8, `echo handled ${s.num_requests}`);
    assert.ok(s.num_errors >= 1);
  });
});

describe("schedule trigger", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  before(async () => {
    nats = await startTestNats(hooks);
  });

  it("fires on every boundary in every worker, and what it publishes is kept once per tick", async () => {
    const { host: a } = await startHost(hooks, nats);
    const { host: b } = await startHost(hooks, nats);
    await waitFor("ten ticks", async () => (await readSubject(nats.jsm, "OUT", "out.tick")).length >= 10 || undefined, 10_000);
    const ticks = (await readSubject(nats.jsm, "OUT", "out.tick")).map((m) => m.json<{ tick: number }>().tick);
    assert.equal(new Set(ticks).size, ticks.length, `a tick was stored twice: ${ticks.join(",")}`);
    const sorted = [...ticks].sort((x, y) => x - y);
    assert.deepEqual(ticks, sorted, "ticks out of order");
    assert.ok(sorted.at(-1)! - sorted[0]! <= ticks.length, `ticks were skipped: ${ticks.join(",")}`);
    for (const h of [a, b]) {
      const fn = h.functions.find((f) => f.id === "sched/tick")!;
      assert.ok(fn.stats.received >= 8, `a worker fired only ${fn.stats.received} times`);
    }
  });
});

describe("rate limits and backpressure", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let host: Host;
  before(async () => {
    nats = await startTestNats(hooks);
    ({ host } = await startHost(hooks, nats));
  });

  it("spaces one key's messages by the limit without slowing other keys", async () => {
    const n = 12;
    const t0 = Date.now();
    for (let i = 0; i < n; i++) await nats.js.publish("jobs.limited", json({ agent: "a", n: i }));
    await nats.js.publish("jobs.limited", json({ agent: "b", n: 0 }));
    const b = await waitFor("agent b", async () => (await readSubject(nats.jsm, "OUT", "out.limited.b"))[0]);
    const all = await waitFor("all of agent a", async () => {
      const got = await readSubject(nats.jsm, "OUT", "out.limited.a");
      return got.length >= n ? got : undefined;
    });
    const times = all.map((m) => m.json<{ at: number }>().at).sort((x, y) => x - y);
    const span = times.at(-1)! - times[0]!;
    // GCRA: 5 back to back, then one per 200 ms → the last of 12 no sooner than 7 × 200 ms
    assert.ok(span >= 1300, `12 messages at 5/s took only ${span} ms`);
    assert.ok(b.json<{ at: number }>().at - t0 < 1500, "agent b waited behind agent a");
  });

  it("defers rather than dead-letters when the wait is long, without spending attempts", async () => {
    // jobs/throttled: 2/s, 8 held at once, a 2 s reservation horizon → later slots are deferred
    // (redelivered); with maxDeliver 2, counted deliveries would dead-letter them.
    const n = 12;
    for (let i = 0; i < n; i++) await nats.js.publish("jobs.throttled", json({ n: i }));
    const all = await waitFor("all throttled jobs", async () => {
      const got = await readSubject(nats.jsm, "OUT", "out.throttled");
      return got.length >= n ? got : undefined;
    }, 30_000);
    assert.equal(new Set(all.map((m) => m.json<{ n: number }>().n)).size, n);
    const dead = await listDeadLetters(nats.jsm, "DEAD_LETTERS", { fn: "jobs/throttled", prefix: "dlq" });
    assert.equal(dead.length, 0);
    const fn = host.functions.find((f) => f.id === "jobs/throttled")!;
    assert.ok(fn.stats.deferred > 0, "no message was deferred, so the horizon path was not exercised");
    assert.equal(fn.stats.failed, 0);
  });

  it("runs at most `concurrency` handlers and holds at most `prefetch` messages per worker", async () => {
    const n = 24;
    for (let i = 0; i < n; i++) await nats.js.publish("jobs.work", json({ id: `c.${i}`, ms: 150 }));
    let maxAckPending = 0;
    const got = await waitFor("all work", async () => {
      maxAckPending = Math.max(maxAckPending, (await nats.jsm.consumers.info("JOBS", "jobs_work")).num_ack_pending);
      const r = await readSubject(nats.jsm, "OUT", "out.work.c.>");
      return r.length >= n ? r.map((m) => m.json<{ running: number }>()) : undefined;
    }, 30_000, 20);
    const peak = Math.max(...got.map((r) => r.running));
    assert.equal(peak, 4, `peak concurrency ${peak}; jobs/work allows 4`);
    assert.ok(maxAckPending <= 8, `the worker held ${maxAckPending} messages; its prefetch is 8`);
    assert.ok(maxAckPending > 4, `held only ${maxAckPending}: the pull did not batch ahead`);
  });

  it("reads stream depth (cached) and holds publishes above high water until the stream drains", async () => {
    const { Backpressure } = await import("../host/backpressure.ts");
    await nats.jsm.streams.add({ name: "DEPTH", subjects: ["depth.>"], max_msgs: 10, discard: DiscardPolicy.New });
    const bp = new Backpressure(nats.jsm, { highWater: 0.8, cacheMs: 100, pauseMs: 20 });
    assert.equal(await bp.streamFor("depth.x"), "DEPTH");
    for (let i = 0; i < 7; i++) await nats.js.publish("depth.x", json(i));
    assert.equal(await bp.isAboveHighWater("DEPTH"), false);
    await nats.js.publish("depth.x", json(7));
    await new Promise((r) => setTimeout(r, 150)); // past the cache
    await bp.depth("DEPTH"); // the stale reading is returned while the refresh runs
    assert.equal(await waitFor("8 of 10 seen as high water", async () => (await bp.isAboveHighWater("DEPTH")) || undefined, 2000), true);
    // a short wait gives up while the stream stays full …
    assert.equal(await bp.waitBelowHighWater("DEPTH", 100), false);
    // … and a longer one returns soon after the stream drains
    const waiting = bp.waitBelowHighWater("DEPTH", 5000);
    await new Promise((r) => setTimeout(r, 100));
    await nats.jsm.streams.purge("DEPTH");
    assert.equal(await waiting, true);
  });

  it("holds a handler whose output stream is full and finishes it when room appears", async () => {
    const n = 5;
    for (let i = 1; i <= n; i++) await nats.js.publish("jobs.fill", json({ n: i }));
    // SMALL keeps 3 messages (discard new): two jobs cannot publish and wait
    await waitFor("SMALL full", async () => (await nats.jsm.streams.info("SMALL")).state.messages === 3 || undefined);
    const fn = host.functions.find((f) => f.id === "jobs/fill")!;
    await waitFor("a deferral", () => fn.stats.deferred > 0 || undefined);
    assert.equal(fn.stats.failed, 0);
    assert.equal((await listDeadLetters(nats.jsm, "DEAD_LETTERS", { fn: "jobs/fill", prefix: "dlq" })).length, 0);
    await nats.jsm.streams.purge("SMALL");
    await waitFor("the held jobs land", async () => (await countSubject(nats.jsm, "SMALL", "small.>")) === 2 || undefined, 20_000);
    await waitFor("JOBS drained", async () => (await nats.jsm.streams.info("JOBS")).state.messages === 0 || undefined);
    const after = (await readSubject(nats.jsm, "SMALL", "small.>")).map((m) => m.json<{ n: number }>().n);
    assert.equal(after.length, 2);
    assert.equal(fn.stats.failed, 0, "a full stream was counted as a failure");
  });
});
