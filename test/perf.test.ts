import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startHost } from "./helpers/host.ts";

// The seed's ping-pong gate as a generous CI check: request → host function → reply, p95 under
// 15 ms (PERF_P95_MS overrides it on slow machines). The real figures come from `npm run bench`.

const GATE_MS = Number(process.env.PERF_P95_MS ?? 15);

describe("ping-pong gate", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  before(async () => {
    nats = await startTestNats(hooks);
    await startHost(hooks, nats);
  });

  it(`answers request round trips through the host with p95 < ${GATE_MS} ms`, async () => {
    const body = JSON.stringify({ text: "x".repeat(64) });
    for (let i = 0; i < 200; i++) await nats.nc.request("req.echo", body, { timeout: 5000 });
    const times: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      const reply = await nats.nc.request("req.echo", body, { timeout: 5000 });
      times.push(performance.now() - t0);
      assert.equal(reply.json<{ length: number }>().length, 64);
    }
    times.sort((a, b) => a - b);
    const p95 = times[Math.ceil(0.95 * times.length) - 1]!;
    assert.ok(p95 < GATE_MS, `p95 ${p95.toFixed(2)} ms ≥ ${GATE_MS} ms (p50 ${times[499]!.toFixed(2)} ms)`);
  });
});
