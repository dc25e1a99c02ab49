import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { listDeadLetters, type DeadLetter } from "../host/deadLetter.ts";
import { ErrorCode } from "../host/errors.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { readSubject, startHost, waitFor } from "./helpers/host.ts";
import type { Host } from "../host/runtime.ts";

// Every row of the outcome table, through a real nats-server and an in-process host.

let nats: TestNats;
let host: Host;
let lines: string[];

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));

async function deadLetterFor(fn: string, sourceSeq: number): Promise<DeadLetter> {
  return waitFor(`dead letter for ${fn} seq ${sourceSeq}`, async () => {
    const all = await listDeadLetters(nats.jsm, "DEAD_LETTERS", { fn, prefix: "dlq", limit: 10_000 });
    return all.find((d) => d.sourceSeq === sourceSeq);
  });
}

async function receipts(id: string) {
  return (await readSubject(nats.jsm, "OUT", `out.record.${id}`)).map((m) => m.json<{ attempt: number; delivery: number; at: number }>());
}

async function jobsLeft(): Promise<number> {
  return (await nats.jsm.streams.info("JOBS")).state.messages;
}

describe("outcomes", () => {
  const hooks = suiteScope(after);
  before(async () => {
    // 8 MB max_payload so the suite can send 1–2 MB payloads
    nats = await startTestNats(hooks, { config: "max_payload: 8388608" });
    ({ host, lines } = await startHost(hooks, nats));
  });

  it("acks a handler that returns, and the work queue empties", async () => {
    const ack = await nats.js.publish("jobs.record", json({ id: "ok1" }));
    const [r] = await waitFor("receipt", async () => ((await receipts("ok1")).length ? receipts("ok1") : undefined));
    assert.equal(r!.attempt, 1);
    await waitFor("JOBS empty", async () => (await jobsLeft()) === 0 || undefined);
    const ci = await nats.jsm.consumers.info("JOBS", "jobs_record");
    assert.equal(ci.num_ack_pending, 0);
    assert.ok(ci.delivered.stream_seq >= ack.seq);
  });

  it("terms malformed JSON into the dead-letter stream with the original bytes and headers", async () => {
    const h = natsHeaders();
    h.set("X-Origin", "test-suite");
    const ack = await nats.js.publish("jobs.record", enc.encode("{not json"), { headers: h, msgID: "malformed-1" });
    const dl = await deadLetterFor("jobs/record", ack.seq);
    assert.equal(dl.reason, ErrorCode.MalformedJson);
    assert.equal(new TextDecoder().decode(dl.data), "{not json");
    assert.equal(dl.headers["X-Origin"]?.[0], "test-suite");
    assert.equal(dl.stream, "JOBS");
    assert.equal(dl.subject, "jobs.record");
    assert.equal(dl.msgId, "malformed-1");
    assert.equal(dl.attempts, 1);
    assert.match(dl.error?.message ?? "", /JSON/);
    await waitFor("JOBS empty", async () => (await jobsLeft()) === 0 || undefined);
  });

  it("terms a schema violation with the failing path in the reason", async () => {
    const ack = await nats.js.publish("jobs.record", json({ id: 42 }));
    const dl = await deadLetterFor("jobs/record", ack.seq);
    assert.equal(dl.reason, ErrorCode.InvalidPayload);
    assert.match(dl.error?.message ?? "", /id/);
  });

  it("terms a NonRetriableError on the first attempt", async () => {
    const ack = await nats.js.publish("jobs.record", json({ id: "fatal1", behavior: "fatal" }));
    const dl = await deadLetterFor("jobs/record", ack.seq);
    assert.equal(dl.reason, ErrorCode.NonRetriable);
    assert.equal(dl.attempts, 1);
    assert.equal(dl.error?.name, "NonRetriableError");
    assert.match(dl.error?.message ?? "", /can never succeed/);
  });

  it("retries other errors with nak(delay), then dead-letters after maxDeliver and empties the queue", async () => {
    const t0 = Date.now();
    const ack = await nats.js.publish("jobs.record", json({ id: "fail1", behavior: "fail" }));
    const dl = await deadLetterFor("jobs/record", ack.seq);
    const elapsed = Date.now() - t0;
    assert.equal(dl.reason, ErrorCode.MaxDeliveries);
    assert.equal(dl.attempts, 3);
    assert.match(dl.error?.message ?? "", /failed on attempt 3/);
    // two backoff delays (≈100 and ≈200 ms, ±20 %): a bare nak would redeliver at once
    assert.ok(elapsed >= 230, `three attempts took only ${elapsed} ms: the delays were not applied`);
    await waitFor("JOBS empty", async () => (await jobsLeft()) === 0 || undefined);
    assert.equal((await receipts("fail1")).length, 0);
  });

  it("dead-letters at once an error classifyError calls non-retriable, with the error's code", async () => {
    const { seq } = await nats.js.publish("jobs.record", json({ id: "cls-refused", behavior: "refused" }));
    const dl = await deadLetterFor("jobs/record", seq);
    assert.equal(dl.reason, "FIXTURE_REFUSED", "the error's own code is the reason");
    assert.equal(dl.error?.code, "FIXTURE_REFUSED");
    assert.equal(dl.attempts, 1);
  });

  it("retries an error classifyError calls transient without spending attempts (maxDeliver 3, five outages)", async () => {
    await nats.js.publish("jobs.record", json({ id: "cls-down", behavior: "down" }));
    const [r] = await waitFor("receipt after the outage", async () => ((await receipts("cls-down")).length ? receipts("cls-down") : undefined), 30_000);
    assert.equal(r!.delivery, 6);
    assert.equal(r!.attempt, 1, "deliveries during the outage spent attempts");
  });

  it("succeeds on a retry after one failure", async () => {
    const t0 = Date.now();
    await nats.js.publish("jobs.record", json({ id: "once1", behavior: "failOnce" }));
    const [r] = await waitFor("receipt", async () => ((await receipts("once1")).length ? receipts("once1") : undefined));
    assert.equal(r!.attempt, 2);
    assert.ok(r!.at - t0 >= 75, "the retry came before the backoff delay");
  });

  it("honours RetryAfterError(ms)", async () => {
    const t0 = Date.now();
    await nats.js.publish("jobs.record", json({ id: "ra1", behavior: "retryAfter", ms: 700 }));
    const [r] = await waitFor("receipt", async () => ((await receipts("ra1")).length ? receipts("ra1") : undefined));
    assert.equal(r!.attempt, 2);
    assert.ok(r!.at - t0 >= 650, `retried after ${r!.at - t0} ms, asked for 700`);
  });

  it("aborts a handler past its timeout and dead-letters it when every attempt times out", async () => {
    const ack = await nats.js.publish("jobs.record", json({ id: "hang1", behavior: "hang" }));
    const dl = await deadLetterFor("jobs/record", ack.seq);
    assert.equal(dl.reason, ErrorCode.MaxDeliveries);
    assert.equal(dl.error?.code, ErrorCode.Timeout);
    assert.equal(dl.attempts, 3);
  });

  it("keeps a handler's lease with working() when it runs past ack_wait", async () => {
    // ack wait is 5 s in the fixtures; this handler takes 7 s with a 8 s budget via `slow`
    const fn = host.functions.find((f) => f.id === "jobs/record")!;
    assert.equal(fn.ackWaitMs, 5000);
    // record's timeout is 1 s, so use the work function (20 s timeout, 3 s ack wait)
    const ack = await nats.js.publish("jobs.work", json({ id: "long1", ms: 4500 }));
    const got = await waitFor("receipt", async () => {
      const r = await readSubject(nats.jsm, "OUT", "out.work.long1");
      return r.length ? r : undefined;
    });
    assert.equal(got.length, 1, "the message was redelivered while its handler still ran");
    assert.equal(got[0]!.json<{ attempt: number }>().attempt, 1);
    const ci = await nats.jsm.consumers.info("JOBS", "jobs_work");
    assert.equal(ci.num_redelivered, 0);
    assert.ok(ci.delivered.stream_seq >= ack.seq);
  });

  it("never emits twice when a handler publishes and then fails (derived msg ids)", async () => {
    await nats.js.publish("jobs.record", json({ id: "pf1", behavior: "publishThenFail" }));
    await waitFor("second attempt done", async () => {
      const ci = await nats.jsm.consumers.info("JOBS", "jobs_record");
      return (ci.num_ack_pending === 0 && ci.num_pending === 0) || undefined;
    });
    const r = await receipts("pf1");
    assert.equal(r.length, 1, "the retried handler's publish was stored twice");
    assert.equal(r[0]!.attempt, 1);
  });

  it("survives garbage: not JSON, wrong types, invalid UTF-8, deep nesting, 1 MB strings", async () => {
    const garbage: Uint8Array[] = [
      new Uint8Array([0xff, 0xfe, 0x00, 0x80]),
      enc.encode("null"),
      enc.encode("[]"),
      enc.encode('"a string"'),
      enc.encode("12345"),
      enc.encode("[".repeat(20_000) + "]".repeat(20_000)),
      json({ id: { nested: true } }),
      json({ id: "x", behavior: "explode" }),
      enc.encode(""),
      json({ id: "x".repeat(2_000_000) }), // over the 1 MiB payload limit
    ];
    const seqs: number[] = [];
    for (const g of garbage) seqs.push((await nats.js.publish("jobs.record", g)).seq);
    for (const seq of seqs) {
      const dl = await deadLetterFor("jobs/record", seq);
      assert.ok(
        [ErrorCode.MalformedJson, ErrorCode.InvalidPayload, ErrorCode.PayloadTooLarge].includes(dl.reason as never),
        `unexpected reason ${dl.reason} for seq ${seq}`,
      );
    }
    const big = await deadLetterFor("jobs/record", seqs.at(-1)!);
    assert.equal(big.reason, ErrorCode.PayloadTooLarge);
    // a 1 MB string inside the limit is handled normally
    await nats.js.publish("jobs.record", json({ id: "big1", text: "y".repeat(1_000_000) }));
    await waitFor("receipt for 1 MB payload", async () => ((await receipts("big1")).length ? true : undefined));
    // and the worker still works
    await nats.js.publish("jobs.record", json({ id: "after-garbage" }));
    await waitFor("receipt after garbage", async () => ((await receipts("after-garbage")).length ? true : undefined));
  });

  it("never echoes a payload whole: a 600 kB value that fails its schema leaves a bounded reason and log line", async () => {
    const before = lines.length;
    const { seq } = await nats.js.publish("jobs.record", json({ id: "p", behavior: "z".repeat(600_000) }));
    const dl = await deadLetterFor("jobs/record", seq);
    assert.equal(dl.reason, ErrorCode.InvalidPayload);
    const reason = dl.error?.message ?? "";
    assert.match(reason, /behavior/);
    assert.match(reason, /\(600\d{3} bytes\)/, "the cut says how big the value was");
    assert.ok(reason.length < 1000, `reason is ${reason.length} chars`);
    const logged = await waitFor("the dead-letter log line", () => lines.slice(before).find((l) => l.includes('"dead-lettered"')));
    assert.ok(logged.length < 2000, `log line is ${logged.length} chars`);
    JSON.parse(logged);
  });

  it("runs an idempotent function once per key, even for a new message with the same key", async () => {
    await nats.js.publish("jobs.once", json({ order: "o-1" }), { msgID: "order-a" });
    await waitFor("first run", async () => ((await readSubject(nats.jsm, "OUT", "out.once.o-1")).length ? true : undefined));
    await nats.js.publish("jobs.once", json({ order: "o-1" }), { msgID: "order-b" });
    await waitFor("second message settled", async () => {
      const ci = await nats.jsm.consumers.info("JOBS", "jobs_once");
      return (ci.num_ack_pending === 0 && ci.num_pending === 0 && ci.delivered.consumer_seq >= 2) || undefined;
    });
    assert.equal((await readSubject(nats.jsm, "OUT", "out.once.o-1")).length, 1);
    const kv = await host.kv("host_runs");
    // the function id contains '/', so its token in the key is hashed; the order key is kept
    const keys: string[] = [];
    for await (const k of await kv.keys("done.>")) keys.push(k);
    assert.ok(keys.some((k) => k.endsWith(".o-1")), `no completion record among ${keys.join(", ")}`);
  });
});
