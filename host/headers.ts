import type { MsgHdrs } from "@nats-io/transport-node";

/** Header names the host reads and writes. All are optional on input: plain JSON always works. */
export const Header = {
  /** JetStream de-duplication id; the host sets one on every publish. */
  MsgId: "Nats-Msg-Id",
  /** W3C trace context. */
  TraceParent: "traceparent",
  TraceState: "tracestate",
  /** The id that ties every message of one conversation (one scenario run, one user action). */
  CorrelationId: "Syntropism-Correlation-Id",
  /** The msg id of the message that caused this one. */
  CausationId: "Syntropism-Causation-Id",
  /** Who sent it (an agent id, a function id, `cli`). */
  Sender: "Syntropism-Sender",
  /** Set on a message replayed from the dead-letter stream: `<stream>:<seq>` of the dead letter. */
  ReplayOf: "Syntropism-Replay-Of",
} as const;

/** First value of each header, as a plain object. */
export function headerRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const [k, values] of h) if (values.length) out[k] = values[0]!;
  return out;
}
