import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { GatewayError, McpGateway } from "../gateway/client.ts";
import { parseGatewayConfig } from "../gateway/config.ts";
import { ServerLimiter } from "../gateway/limiter.ts";
import { ROOT } from "./helpers/host.ts";

// The gateway's per-server limiter (gateway/limiter.ts, which replaced bottleneck): at most
// `max_concurrent` calls in flight, call starts at least `min_time_ms` apart — directly, then
// against the local web_search MCP server as a real stdio child.

// Node's timers fire on whole milliseconds; allow that much on a lower bound
const SLACK_MS = 2;

/** Runs jobs through a limiter, recording when each started and ended (ms since `t0`). */
function recorder() {
  const t0 = performance.now();
  const starts = new Map<string, number>();
  const ends = new Map<string, number>();
  let inFlight = 0;
  let maxInFlight = 0;
  const job = (name: string, ms: number) => async () => {
    starts.set(name, performance.now() - t0);
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    await sleep(ms);
    inFlight--;
    ends.set(name, performance.now() - t0);
    return name;
  };
  return { job, starts, ends, maxInFlight: () => maxInFlight };
}

describe("ServerLimiter", () => {
  it("limit - never more than maxConcurrent at once, and that many when there is work", async () => {
    const limiter = new ServerLimiter({ maxConcurrent: 3, minTimeMs: 0 });
    const r = recorder();
    const names = Array.from({ length: 10 }, (_, i) => `j${i}`);
    assert.deepEqual(await Promise.all(names.map((n) => limiter.schedule(r.job(n, 40)))), names);
    assert.equal(r.maxInFlight(), 3);
    // in order: the fourth starts only when one of the first three has ended
    assert.ok(r.starts.get("j3")! >= Math.min(...["j0", "j1", "j2"].map((n) => r.ends.get(n)!)) - SLACK_MS);
  });

  it("spacing - starts at least minTimeMs apart in a burst, in order, without idling longer", async () => {
    const limiter = new ServerLimiter({ maxConcurrent: 4, minTimeMs: 80 });
    const r = recorder();
    const names = ["a", "b", "c", "d", "e"];
    await Promise.all(names.map((n) => limiter.schedule(r.job(n, 1))));
    const starts = names.map((n) => r.starts.get(n)!);
    for (let i = 1; i < starts.length; i++) assert.ok(starts[i]! - starts[i - 1]! >= 80 - SLACK_MS, `start ${i} came ${starts[i]! - starts[i - 1]!} ms after the one before: ${starts}`);
    assert.ok(starts.at(-1)! < 4 * 80 + 200, `the burst took ${starts.at(-1)} ms`);
  });

  it("spacing - holds across the edge of a fixed window (where p-queue's interval/intervalCap would not)", async () => {
    // a starts at 0 and runs 190 ms; b waits for the slot (starts ~190); c arrives at 205 ms. With
    // p-queue's {interval: 100, intervalCap: 1} the window that opened at 200 lets c start at once,
    // ~15 ms after b; bottleneck's minTime, and this limiter, make it wait until b + 100.
    const limiter = new ServerLimiter({ maxConcurrent: 1, minTimeMs: 100 });
    const r = recorder();
    const ab = [limiter.schedule(r.job("a", 190)), limiter.schedule(r.job("b", 1))];
    await sleep(205);
    await Promise.all([...ab, limiter.schedule(r.job("c", 1))]);
    const gap = r.starts.get("c")! - r.starts.get("b")!;
    assert.ok(gap >= 100 - SLACK_MS, `c started ${gap} ms after b`);
  });

  it("stop - rejects calls not yet started, lets started ones finish, refuses later ones", async () => {
    const limiter = new ServerLimiter({ maxConcurrent: 1, minTimeMs: 0 });
    const r = recorder();
    const running = limiter.schedule(r.job("running", 50));
    const waiting = limiter.schedule(r.job("waiting", 1));
    await sleep(10);
    limiter.stop(new Error("stopped"));
    await assert.rejects(waiting, /stopped/);
    assert.equal(await running, "running");
    await assert.rejects(limiter.schedule(r.job("later", 1)), /stopped/);
    assert.equal(r.starts.has("waiting"), false);
    assert.equal(r.starts.has("later"), false);
  });
});

describe("the limiter in McpGateway, against the local web_search server (stdio)", () => {
  const dir = mkdtempSync(join(tmpdir(), "gateway-limiter-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A gateway on one stdio web_search server whose every tools/call is logged with its arrival time. */
  function gateway(limits: { max_concurrent: number; min_time_ms: number }, callLog: string): McpGateway {
    const raw = {
      servers: {
        search: { type: "stdio", command: "node", args: ["--import", "tsx", "gateway/servers/webSearch.ts"], env: { WEB_SEARCH_CALL_LOG: callLog }, ...limits },
      },
    };
    return new McpGateway(parseGatewayConfig(raw, ROOT));
  }
  const arrivals = (callLog: string, prefix: string) =>
    (existsSync(callLog) ? readFileSync(callLog, "utf8").split("\n").filter(Boolean) : [])
      .map((l) => JSON.parse(l) as { query: string; at: number })
      .filter((c) => c.query.startsWith(prefix))
      .map((c) => c.at)
      .sort((a, b) => a - b);

  it("max_concurrent 2: two calls reach the server at once, the third only when one has answered", async () => {
    const callLog = join(dir, "limit.jsonl");
    const gw = gateway({ max_concurrent: 2, min_time_ms: 0 }, callLog);
    try {
      await gw.connect("search");
      const delay = 300;
      const results = await Promise.all([1, 2, 3, 4].map((i) => gw.call("search", "web_search", { query: `limit ${i}`, delay_ms: delay })));
      assert.ok(results.every((r) => r.isError !== true), JSON.stringify(results));
      const at = arrivals(callLog, "limit ");
      assert.equal(at.length, 4);
      assert.ok(at[1]! - at[0]! < delay, `the second call waited for the first (${at[1]! - at[0]!} ms): no concurrency`);
      assert.ok(at[2]! - at[0]! >= delay - 20, `the third call reached the server ${at[2]! - at[0]!} ms after the first, while two were in flight`);
      assert.ok(at[3]! - at[1]! >= delay - 20, `the fourth call reached the server ${at[3]! - at[1]!} ms after the second, while two were in flight`);
    } finally {
      await gw.close();
    }
  });

  it("min_time_ms 250: calls reach the server 250 ms apart though four may run at once", async () => {
    const callLog = join(dir, "spacing.jsonl");
    const gw = gateway({ max_concurrent: 4, min_time_ms: 250 }, callLog);
    try {
      await gw.connect("search");
      await Promise.all([1, 2, 3, 4].map((i) => gw.call("search", "web_search", { query: `spacing ${i}` })));
      const at = arrivals(callLog, "spacing ");
      assert.equal(at.length, 4);
      // the spacing is kept at the client; arrivals may shift by the transport's jitter
      for (let i = 1; i < at.length; i++) assert.ok(at[i]! - at[i - 1]! >= 200, `call ${i + 1} reached the server ${at[i]! - at[i - 1]!} ms after the one before: ${at.map((t) => t - at[0]!)}`);
    } finally {
      await gw.close();
    }
  });

  it("close rejects calls still waiting for the limiter as UNAVAILABLE (transient)", async () => {
    const callLog = join(dir, "close.jsonl");
    const gw = gateway({ max_concurrent: 1, min_time_ms: 0 }, callLog);
    await gw.connect("search");
    const first = gw.call("search", "web_search", { query: "close 1", delay_ms: 300 }).catch((err: unknown) => err);
    const second = gw.call("search", "web_search", { query: "close 2" }).catch((err: unknown) => err);
    await sleep(100);
    await gw.close();
    const err = await second;
    assert.ok(err instanceof GatewayError, String(err));
    assert.equal(err.code, "UNAVAILABLE");
    assert.equal(err.transient, true);
    await first;
    assert.deepEqual(arrivals(callLog, "close 2"), []);
  });
});
