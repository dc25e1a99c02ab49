import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { RetentionPolicy } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { auditMessage, verifyAuditStream, type AuditReport } from "../host/audit.ts";
import { createEnvelope, type Envelope } from "../host/envelope.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { runCli } from "./helpers/host.ts";

// `host audit verify` against a real nats-server: good envelopes pass, a payload edited after
// hashing, a body that is not JSON and a msg id that is not the event id are each reported with
// their stream sequence, by the function and by the CLI (exit 3), without a streams config.

const enc = new TextEncoder();

describe("audit verify", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let env: Record<string, string>;
  const bad = new Map<number, { kind: string; id: string | null; subject: string }>();
  let total = 0;

  async function publish(stream: string, subject: string, body: Uint8Array, msgID: string): Promise<number> {
    const ack = await nats.js.publish(subject, body, { msgID, expect: { streamName: stream } });
    total++;
    return ack.seq;
  }
  const event = (i: number) =>
    createEnvelope({ type: "bid_placed", from: `agent_${i % 3}`, correlation_id: "run_1", payload: { amount: i, items: [i, `x${i}`] }, metadata: { i } });

  before(async () => {
    nats = await startTestNats(hooks);
    env = { NATS_URL: nats.url, LOG_LEVEL: "warn" };
    await nats.jsm.streams.add({ name: "AUDIT", subjects: ["audit.>"], retention: RetentionPolicy.Limits });
    await nats.jsm.streams.add({ name: "CLEAN", subjects: ["clean.>"], retention: RetentionPolicy.Limits });
    for (let i = 0; i < 40; i++) {
      const e = event(i);
      await publish("CLEAN", `clean.agent_${i % 3}.bid_placed`, enc.encode(JSON.stringify(e)), e.id);
      const subject = `audit.agent_${i % 3}.bid_placed`;
      if (i === 7) {
        // the payload changed after the hash was computed
        const tampered: Envelope = { ...e, payload: { amount: 7000, items: [7, "x7"] } };
        bad.set(await publish("AUDIT", subject, enc.encode(JSON.stringify(tampered)), e.id), { kind: "hash_mismatch", id: e.id, subject });
      } else if (i === 19) {
        bad.set(await publish("AUDIT", "audit.junk", enc.encode("not json {"), "junk-19"), { kind: "invalid", id: "junk-19", subject: "audit.junk" });
      } else if (i === 23) {
        // metadata edited: a nested change deep inside a field the reader does not interpret
        const tampered: Envelope = { ...e, metadata: { i: 24 } };
        bad.set(await publish("AUDIT", subject, enc.encode(JSON.stringify(tampered)), e.id), { kind: "hash_mismatch", id: e.id, subject });
      } else if (i === 31) {
        bad.set(await publish("AUDIT", subject, enc.encode(JSON.stringify(e)), `other-${e.id}`), { kind: "msg_id_mismatch", id: e.id, subject });
      } else {
        await publish("AUDIT", subject, enc.encode(JSON.stringify(e)), e.id);
      }
    }
  });

  const badOf = (r: AuditReport) => r.bad.map((p) => [p.seq, { kind: p.kind, id: p.id, subject: p.subject }] as const);

  it("reports exactly the tampered, unparsable and mis-identified events", async () => {
    const report = await verifyAuditStream(nats.js);
    assert.equal(report.stream, "AUDIT");
    assert.equal(report.checked, 40);
    assert.deepEqual([report.firstSeq, report.lastSeq], [1, 40]);
    assert.deepEqual(badOf(report), [...bad.entries()]);
    assert.match(report.bad[0]!.detail, /envelope_hash is [0-9a-f]{64}, the content hashes to [0-9a-f]{64}/);
    assert.match(report.bad.find((p) => p.kind === "invalid")!.detail, /not UTF-8 JSON/);
  });

  it("walks only the filtered subjects, and a clean stream is all good", async () => {
    const junk = await verifyAuditStream(nats.js, { subject: "audit.junk" });
    assert.equal(junk.checked, 1);
    assert.deepEqual(junk.bad.map((p) => p.seq), [20]);
    const agent1 = await verifyAuditStream(nats.js, { subject: "audit.agent_1.*", batch: 3 });
    assert.equal(agent1.checked, 12); // i % 3 === 1 for 13 of the 40, but i = 19 went to audit.junk
    assert.deepEqual(agent1.bad.map((p) => p.seq), [...bad.entries()].filter(([, b]) => b.subject === "audit.agent_1.bid_placed").map(([seq]) => seq));
    const none = await verifyAuditStream(nats.js, { subject: "audit.nobody.>" });
    assert.deepEqual([none.checked, none.bad.length, none.firstSeq], [0, 0, null]);
    const clean = await verifyAuditStream(nats.js, { stream: "CLEAN" });
    assert.deepEqual([clean.checked, clean.bad.length], [40, 0]);
  });

  it("host audit verify exits 3 and lists each bad sequence; 0 when all good; no streams config needed", async () => {
    const r = await runCli(["audit", "verify"], env);
    assert.equal(r.code, 3, r.stderr);
    const listed = r.stdout.split("\n").filter((l) => l.startsWith("seq ")).map((l) => Number(l.split(/\s+/)[1]));
    assert.deepEqual(listed, [...bad.keys()]);
    assert.match(r.stdout, /AUDIT: checked 40 \(sequences 1–40\), 36 events, bad 4 — MISMATCH/);

    const json = await runCli(["audit", "verify", "--json"], env);
    assert.equal(json.code, 3);
    assert.deepEqual(badOf(JSON.parse(json.stdout)), [...bad.entries()]);

    const ok = await runCli(["audit", "verify", "--stream", "CLEAN", "--subject", "clean.agent_2.*"], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /CLEAN clean\.agent_2\.\*: checked 13 .*bad 0 — all hashes verify/);

    const missing = await runCli(["audit", "verify", "--stream", "NOPE"], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /HOST_ERR_STREAM_MISSING: stream NOPE does not exist on nats:\/\//);
  });

  it("counts an event stored twice once: a copy after the duplicate window is skipped, another content under its id is reported", async () => {
    // a 100 ms duplicate window stands for AUDIT's 2 minutes: the relay or a redelivery may publish
    // an event again after the stream has forgotten its msg id
    await nats.jsm.streams.add({ name: "TWICE", subjects: ["twice.>"], retention: RetentionPolicy.Limits, duplicate_window: nanos(100) });
    const events = [0, 1, 2].map((i) => event(100 + i));
    for (const e of events) await nats.js.publish("twice.bid_placed", enc.encode(JSON.stringify(e)), { msgID: e.id });
    await new Promise((r) => setTimeout(r, 300));
    const again = await nats.js.publish("twice.bid_placed", enc.encode(JSON.stringify(events[1])), { msgID: events[1]!.id });
    assert.equal(again.duplicate, false, "the stream took the second copy");
    // and once with no msg id at all (a publisher that sets none)
    await nats.js.publish("twice.bid_placed", enc.encode(JSON.stringify(events[2])));
    const other = createEnvelope({ id: events[0]!.id, type: "bid_placed", from: "agent_0", correlation_id: "run_1", payload: { amount: -1 } });
    const conflictSeq = (await nats.js.publish("twice.bid_placed", enc.encode(JSON.stringify(other)), { msgID: other.id })).seq;

    const report = await verifyAuditStream(nats.js, { stream: "TWICE" });
    assert.deepEqual([report.checked, report.events, report.duplicates], [6, 3, 2]);
    assert.deepEqual(report.bad.map((p) => [p.seq, p.kind, p.id]), [[conflictSeq, "id_conflict", events[0]!.id]]);
    assert.match(report.bad[0]!.detail, /stored at sequence 1 with other content/);
    const r = await runCli(["audit", "verify", "--stream", "TWICE"], env);
    assert.match(r.stdout, /TWICE: checked 6 \(sequences 1–6\), 3 events, 2 repeated event ids skipped, bad 1 — MISMATCH/);
  });

  it("leaves no consumer behind", async () => {
    await verifyAuditStream(nats.js);
    const names: string[] = [];
    for await (const c of nats.jsm.consumers.list("AUDIT")) names.push(c.name);
    assert.deepEqual(names, []);
  });

  it("checks a message on its own", () => {
    const e = createEnvelope({ type: "t", from: "f", payload: null });
    const data = enc.encode(JSON.stringify(e));
    assert.equal(auditMessage({ seq: 1, subject: "s", data, headers: undefined }), undefined);
    const p = auditMessage({ seq: 2, subject: "s", data: enc.encode(JSON.stringify({ ...e, type: "u" })), headers: undefined });
    assert.equal(p?.kind, "hash_mismatch");
  });
});
