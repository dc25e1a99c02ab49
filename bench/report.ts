import type { NatsConnection } from "@nats-io/transport-node";

// Latency reporting from a consumer (the host's bench function or the raw worker) back to the
// bench process: each consumer computes publish → handler latency on arrival, keeps it in memory
// and publishes a batch on a core subject every 50 ms or 500 samples — one small core publish per
// batch, not per message, so the measurement barely loads the consumer it measures.

export const REPORT_SUBJECT = "bench.report";

const nowMs = (): number => performance.timeOrigin + performance.now();

let batch: number[] = [];
let timer: NodeJS.Timeout | undefined;
let conn: NatsConnection | undefined;

function flush(): void {
  if (timer) clearTimeout(timer);
  timer = undefined;
  if (!batch.length || !conn || conn.isClosed()) return;
  conn.publish(REPORT_SUBJECT, JSON.stringify(batch));
  batch = [];
}

/** Records the latency of a message published at `sentAtMs` (performance.timeOrigin + now()). */
export function recordLatency(nc: NatsConnection, sentAtMs: number): void {
  batch.push(nowMs() - sentAtMs);
  conn = nc;
  if (batch.length >= 500) flush();
  else timer ??= setTimeout(flush, 50);
}

/** The publish timestamp a bench message carries, read without decoding the rest of it. */
export function sentAtOf(data: Uint8Array): number {
  // payloads start with {"t":<number>, (see payloadOf in lib.ts)
  let i = 5;
  let end = i;
  while (end < data.length && data[end] !== 44 /* , */) end++;
  return Number(new TextDecoder().decode(data.subarray(i, end)));
}
