import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { coerceError, ErrorCode, HostError } from "./errors.ts";
import { safeParseEnvelope, verifyEnvelope } from "./envelope.ts";
import { Header } from "./headers.ts";

// `host audit verify`: walk a stream of event envelopes in order and recompute every hash. An
// ordered consumer (ephemeral, in memory, no acks, flow-controlled pulls) reads 100k messages in
// seconds; direct gets would cost one round trip each. The walk covers what the stream (or the
// filter) held when it started: events appended meanwhile are left for the next run.
//
// An event may be stored twice: publishers publish at least once, and the stream drops a repeated
// Nats-Msg-Id only within its duplicate window (2 minutes). The walk counts each event id once:
// a later copy with the same content is skipped (counted in `duplicates`), one with other content
// under the same id is a problem (`id_conflict`).

export const DEFAULT_AUDIT_STREAM = "AUDIT";

export type AuditProblem = {
  seq: number;
  subject: string;
  /** The envelope's id, or the Nats-Msg-Id header when the body is no envelope. */
  id: string | null;
  kind: "invalid" | "hash_mismatch" | "msg_id_mismatch" | "id_conflict";
  detail: string;
};

export type AuditReport = {
  stream: string;
  filter: string | null;
  /** Messages read. */
  checked: number;
  /** Distinct event ids among them (what a reader counts). */
  events: number;
  /** Messages that repeat an event id already seen with the same content: skipped. */
  duplicates: number;
  bad: AuditProblem[];
  firstSeq: number | null;
  lastSeq: number | null;
  elapsedMs: number;
};

export type AuditOptions = {
  /** Default AUDIT. */
  stream?: string;
  /** A subject filter (wildcards allowed); default every subject of the stream. */
  subject?: string;
  /** Messages per pull (default 1000). */
  batch?: number;
};

/** Checks one stored message: parses it as an envelope, recomputes the hash, compares the msg id. */
export function auditMessage(m: Pick<JsMsg, "seq" | "subject" | "data" | "headers">): AuditProblem | undefined {
  return inspect(m).problem;
}

function inspect(m: Pick<JsMsg, "seq" | "subject" | "data" | "headers">): { problem?: AuditProblem; id?: string; hash?: string } {
  const msgId = m.headers?.get(Header.MsgId) || null;
  const problem = (kind: AuditProblem["kind"], id: string | null, detail: string) => ({ problem: { seq: m.seq, subject: m.subject, id, kind, detail } });
  const parsed = safeParseEnvelope(m.data);
  if (!parsed.ok) return problem("invalid", msgId, parsed.issues.join("; "));
  const e = parsed.envelope;
  let check;
  try {
    check = verifyEnvelope(e);
  } catch (err) {
    return problem("invalid", e.id, coerceError(err).message);
  }
  if (!check.ok) return problem("hash_mismatch", e.id, `envelope_hash is ${String(check.actual)}, the content hashes to ${check.expected}`);
  // the event id doubles as the Nats-Msg-Id; a publisher that sets another one defeats de-duplication
  if (msgId !== null && msgId !== e.id) return problem("msg_id_mismatch", e.id, `Nats-Msg-Id is ${msgId}, the envelope's id is ${e.id}`);
  return { id: e.id, hash: check.hash };
}

export async function verifyAuditStream(js: JetStreamClient, opts: AuditOptions = {}): Promise<AuditReport> {
  const started = performance.now();
  const stream = opts.stream ?? DEFAULT_AUDIT_STREAM;
  const report: AuditReport = { stream, filter: opts.subject ?? null, checked: 0, events: 0, duplicates: 0, bad: [], firstSeq: null, lastSeq: null, elapsedMs: 0 };
  // event id → the sequence and hash of its first copy
  const seen = new Map<string, { seq: number; hash: string }>();
  const consumer = await js.consumers.get(stream, opts.subject ? { filter_subjects: opts.subject } : {}).catch((err) => {
    throw new HostError(ErrorCode.StreamRead, `cannot read stream ${stream}: ${coerceError(err).message}`, { cause: err });
  });
  try {
    // how many messages the consumer had to deliver when it was made: the end of the walk
    const total = (await consumer.info(true)).num_pending;
    if (total > 0) {
      const messages = await consumer.consume({ max_messages: opts.batch ?? 1000 });
      try {
        for await (const m of messages) {
          report.firstSeq ??= m.seq;
          report.lastSeq = m.seq;
          report.checked++;
          const { problem, id, hash } = inspect(m);
          if (problem) report.bad.push(problem);
          else if (id !== undefined && hash !== undefined) {
            const first = seen.get(id);
            if (!first) {
              seen.set(id, { seq: m.seq, hash });
              report.events++;
            } else if (first.hash === hash) report.duplicates++;
            else report.bad.push({ seq: m.seq, subject: m.subject, id, kind: "id_conflict", detail: `event ${id} was stored at sequence ${first.seq} with other content (hash ${first.hash})` });
          }
          // pending reaches 0 at the stream's end even if retention removed messages meanwhile
          if (report.checked >= total || m.info.pending === 0) break;
        }
      } finally {
        messages.stop();
      }
    }
  } finally {
    await consumer.delete().catch(() => {});
  }
  report.elapsedMs = Math.round(performance.now() - started);
  return report;
}

const KIND = { invalid: "not a valid envelope", hash_mismatch: "hash mismatch", msg_id_mismatch: "msg id mismatch", id_conflict: "one id, two contents" } as const;

export function formatAuditReport(r: AuditReport): string {
  const lines = r.bad.map((p) => `seq ${p.seq}  ${p.subject}  id ${p.id ?? "-"}  ${KIND[p.kind]}: ${p.detail}`);
  const range = r.firstSeq === null ? "" : ` (sequences ${r.firstSeq}–${r.lastSeq})`;
  const dup = r.duplicates ? `, ${r.duplicates} repeated event id${r.duplicates === 1 ? "" : "s"} skipped` : "";
  lines.push(`${r.stream}${r.filter ? ` ${r.filter}` : ""}: checked ${r.checked}${range}, ${r.events} events${dup}, bad ${r.bad.length} — ${r.bad.length ? "MISMATCH" : "all hashes verify"} (${r.elapsedMs} ms)`);
  return lines.join("\n");
}

/** The CLI's `audit verify`: prints the report; exit 3 when anything is bad, 0 otherwise. */
export async function auditVerifyCommand(js: JetStreamClient, opts: AuditOptions & { json?: boolean }, out: (s: string) => void): Promise<number> {
  const report = await verifyAuditStream(js, opts);
  out(opts.json ? JSON.stringify(report, null, 2) : formatAuditReport(report));
  return report.bad.length ? 3 : 0;
}
