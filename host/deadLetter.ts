import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager, MsgRequest, StoredMsg } from "@nats-io/jetstream";
import type { SerializedError } from "./errors.ts";
import { Header } from "./headers.ts";

// A dead letter keeps the original payload bytes as its body and the original headers, plus the
// host's own headers saying why, how often, where from. The dead-letter stream uses Limits
// retention so it can be browsed; its msg id is derived from the source message, so a crash
// between writing the dead letter and terminating the source does not write it twice.

export const DlqHeader = {
  Reason: "Syntropism-Dlq-Reason",
  Function: "Syntropism-Dlq-Function",
  Stream: "Syntropism-Dlq-Stream",
  Seq: "Syntropism-Dlq-Seq",
  Subject: "Syntropism-Dlq-Subject",
  Attempts: "Syntropism-Dlq-Attempts",
  Error: "Syntropism-Dlq-Error",
  Time: "Syntropism-Dlq-Time",
  MsgId: "Syntropism-Dlq-Msg-Id",
} as const;

const NOT_COPIED = new Set([Header.MsgId.toLowerCase(), "nats-expected-stream", "nats-expected-last-sequence", "nats-expected-last-msg-id", "nats-expected-last-subject-sequence"]);

export type DeadLetterInput = {
  fn: string;
  source: { subject: string; data: Uint8Array; headers?: MsgHdrs; stream?: string; seq?: number; msgId: string };
  reason: string;
  attempts: number;
  error: SerializedError;
};

export function dlqSubject(prefix: string, fn: string): string {
  return `${prefix}.${fn.split("/").join(".")}`;
}

function headerSafe(s: string, max = 2000): string {
  const flat = s.replace(/[\r\n]+/g, " ");
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

export async function writeDeadLetter(js: JetStreamClient, prefix: string, input: DeadLetterInput): Promise<number> {
  const h = natsHeaders();
  if (input.source.headers) {
    for (const [k, values] of input.source.headers) {
      if (NOT_COPIED.has(k.toLowerCase())) continue;
      for (const value of values) h.append(k, value);
    }
  }
  h.set(DlqHeader.Reason, input.reason);
  h.set(DlqHeader.Function, input.fn);
  h.set(DlqHeader.Subject, input.source.subject);
  h.set(DlqHeader.MsgId, headerSafe(input.source.msgId, 500));
  if (input.source.stream) h.set(DlqHeader.Stream, input.source.stream);
  if (input.source.seq !== undefined) h.set(DlqHeader.Seq, String(input.source.seq));
  h.set(DlqHeader.Attempts, String(input.attempts));
  h.set(DlqHeader.Error, headerSafe(JSON.stringify(input.error)));
  h.set(DlqHeader.Time, new Date().toISOString());
  const id = input.source.stream && input.source.seq !== undefined ? `dlq:${input.source.stream}:${input.source.seq}` : `dlq:${input.source.msgId}`;
  const ack = await js.publish(dlqSubject(prefix, input.fn), input.source.data, { msgID: id, headers: h });
  return ack.seq;
}

export type DeadLetter = {
  seq: number;
  time: string;
  fn: string;
  reason: string;
  attempts: number;
  error: SerializedError | undefined;
  subject: string;
  stream?: string;
  sourceSeq?: number;
  msgId: string;
  headers: Record<string, string[]>;
  data: Uint8Array;
};

export function parseDeadLetter(m: Pick<StoredMsg, "seq" | "header" | "data" | "time">): DeadLetter {
  const get = (k: string) => m.header?.get(k) ?? "";
  let error: SerializedError | undefined;
  try {
    error = JSON.parse(get(DlqHeader.Error));
  } catch {
    error = undefined;
  }
  const all: Record<string, string[]> = {};
  if (m.header) for (const [k, v] of m.header) all[k] = v;
  return {
    seq: m.seq,
    time: get(DlqHeader.Time) || m.time.toISOString(),
    fn: get(DlqHeader.Function),
    reason: get(DlqHeader.Reason),
    attempts: Number(get(DlqHeader.Attempts)) || 0,
    error,
    subject: get(DlqHeader.Subject),
    stream: get(DlqHeader.Stream) || undefined,
    sourceSeq: get(DlqHeader.Seq) ? Number(get(DlqHeader.Seq)) : undefined,
    msgId: get(DlqHeader.MsgId),
    headers: all,
    data: m.data,
  };
}

export async function listDeadLetters(
  jsm: JetStreamManager,
  stream: string,
  opts: { fn?: string; prefix: string; limit?: number },
): Promise<DeadLetter[]> {
  const info = await jsm.streams.info(stream);
  const out: DeadLetter[] = [];
  const limit = opts.limit ?? 100;
  if (info.state.messages === 0) return out;
  const filter = opts.fn ? dlqSubject(opts.prefix, opts.fn) : `${opts.prefix}.>`;
  let seq = info.state.first_seq;
  while (seq <= info.state.last_seq && out.length < limit) {
    // the first message at or after seq on the filter subject (skips deleted sequences)
    const query = { seq, next_by_subj: filter } as unknown as MsgRequest;
    const m = await jsm.streams.getMessage(stream, query).catch(() => null);
    if (!m) break;
    out.push(parseDeadLetter(m));
    seq = m.seq + 1;
  }
  return out;
}

export async function getDeadLetter(jsm: JetStreamManager, stream: string, seq: number): Promise<DeadLetter | undefined> {
  const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
  return m ? parseDeadLetter(m) : undefined;
}

/**
 * Publishes a dead letter's payload back to its original subject with its original headers. The
 * new msg id is derived from the dead letter's sequence, so the replay is not swallowed by the
 * source stream's duplicate window, yet replaying the same dead letter twice counts once.
 */
export async function replayDeadLetter(js: JetStreamClient, jsm: JetStreamManager, stream: string, dl: DeadLetter, opts: { keep?: boolean } = {}): Promise<number> {
  const h = natsHeaders();
  for (const [k, values] of Object.entries(dl.headers)) {
    if (k.startsWith("Syntropism-Dlq-") || NOT_COPIED.has(k.toLowerCase())) continue;
    for (const v of values) h.append(k, v);
  }
  h.set(Header.ReplayOf, `${stream}:${dl.seq}`);
  const ack = await js.publish(dl.subject, dl.data, { msgID: `${dl.msgId}:replay:${stream}:${dl.seq}`, headers: h });
  if (!opts.keep) await jsm.streams.deleteMessage(stream, dl.seq, false);
  return ack.seq;
}

export async function purgeDeadLetters(jsm: JetStreamManager, stream: string, opts: { fn?: string; prefix: string }): Promise<number> {
  const r = await jsm.streams.purge(stream, opts.fn ? { filter: dlqSubject(opts.prefix, opts.fn) } : undefined);
  return r.purged;
}
