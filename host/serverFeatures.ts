// What the connected nats-server can do. The host adapts (and says so) instead of failing: Debian
// ships 2.9, which lacks several features newer servers have.

export type ServerFeatures = {
  version: string;
  /** `+TERM <reason>` (2.10.4+): the reason appears in the server's advisory. */
  termReason: boolean;
  /** Several filter subjects on one consumer (2.10+). */
  multipleFilters: boolean;
  /** Stream and consumer metadata maps (2.10+). */
  metadata: boolean;
  /** Per-message TTL, `Nats-TTL` (2.11+). */
  messageTtl: boolean;
  /** Delayed / scheduled messages (2.12+). */
  scheduledMessages: boolean;
};

function parse(version: string): [number, number, number] {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [0, 0, 0];
}

export function atLeast(version: string, want: string): boolean {
  const a = parse(version);
  const b = parse(want);
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! > b[i]!;
  return true;
}

export function featuresOf(version: string): ServerFeatures {
  return {
    version,
    termReason: atLeast(version, "2.10.4"),
    multipleFilters: atLeast(version, "2.10.0"),
    metadata: atLeast(version, "2.10.0"),
    messageTtl: atLeast(version, "2.11.0"),
    scheduledMessages: atLeast(version, "2.12.0"),
  };
}

/** Human-readable list of what this server lacks, for a start-up warning. */
export function missingFeatures(f: ServerFeatures): string[] {
  const out: string[] = [];
  if (!f.termReason) out.push("term reasons (2.10.4): dead-letter reasons are kept in the dead letter only");
  if (!f.multipleFilters) out.push("multiple filter subjects per consumer (2.10): one subject per function trigger");
  if (!f.metadata) out.push("stream/consumer metadata (2.10): function ids are kept in consumer descriptions");
  if (!f.messageTtl) out.push("per-message TTL (2.11): expiry is per stream (max age) only");
  if (!f.scheduledMessages) out.push("scheduled messages (2.12): delays are done with nak(delay)");
  return out;
}
