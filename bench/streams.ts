import { join } from "node:path";
import { AckPolicy, DeliverPolicy, JetStreamApiError, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import type { HostConfig } from "../host/config.ts";
import { loadConfigFile } from "../host/configFile.ts";
import { applyPlan, planStreams } from "../host/streams.ts";
import { BENCH_DIR, nowMs, payloadOf, sleep } from "./lib.ts";

// JetStream chores shared by the throughput and latency benchmarks: fresh streams, bulk and paced
// publishing, and sampling what a consumer still has to do.

export const benchConfig = (): Promise<HostConfig> => loadConfigFile(join(BENCH_DIR, "streams.config.ts"));

/** Deletes `stream` (and with it every consumer) and creates it again from the bench config. */
export async function freshStream(nc: NatsConnection, jsm: JetStreamManager, config: HostConfig, stream: string): Promise<void> {
  await jsm.streams.delete(stream).catch((err) => {
    if (!(err instanceof JetStreamApiError)) throw err;
  });
  await applyPlan(nc, jsm, await planStreams(jsm, config));
}

/** A durable pull consumer for the raw baseline, configured as the host configures its own. */
export async function addRawConsumer(jsm: JetStreamManager, stream: string, subject: string, name: string): Promise<void> {
  await jsm.consumers.add(stream, {
    durable_name: name,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: subject,
    ack_wait: nanos(30_000),
    max_deliver: -1,
    max_ack_pending: 1000,
  });
}

/** Publishes `n` messages with JetStream acks, `window` outstanding at a time. */
export async function publishMany(js: JetStreamClient, subject: string, n: number, size: number, window = 1000): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      await js.publish(subject, payloadOf(size, nowMs(), i));
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, n) }, lane));
}

export type PacedResult = { sent: number; acked: number; errors: number; elapsedMs: number; achievedRate: number };

/**
 * Publishes at `rate` msgs/s for `durationMs`: a timer loop that, each tick, sends what is due by
 * then (async publishes, acks not awaited in the loop). Each payload carries its publish time.
 */
export async function publishPaced(js: JetStreamClient, subject: string, rate: number, durationMs: number, size: number): Promise<PacedResult> {
  let sent = 0;
  let acked = 0;
  let errors = 0;
  const inflight = new Set<Promise<void>>();
  const start = performance.now();
  let last = start;
  for (;;) {
    const elapsed = performance.now() - start;
    if (elapsed >= durationMs) break;
    const due = Math.floor((rate * elapsed) / 1000);
    while (sent < due) {
      const p: Promise<void> = js.publish(subject, payloadOf(size, nowMs(), sent)).then(
        () => void acked++,
        () => void errors++,
      ).finally(() => inflight.delete(p));
      inflight.add(p);
      sent++;
      last = performance.now();
    }
    await sleep(1);
  }
  await Promise.allSettled([...inflight]);
  const elapsedMs = Math.max(1, last - start);
  return { sent, acked, errors, elapsedMs: Math.round(elapsedMs), achievedRate: Math.round((sent / elapsedMs) * 1000) };
}

export type CpuReading = { consumer?: number; server?: number };

export type DrainResult = {
  drained: number;
  seconds: number;
  rate: number;
  startupMs: number;
  totalMs: number;
  /** CPU microseconds per message while draining, where /proc allows (Linux). */
  cpuUsPerMsg?: { consumer?: number; server?: number };
};

/**
 * Polls a work-queue stream until it is empty. The rate runs from the first poll that saw progress
 * to the first that saw it empty, so process start-up is not counted (it is reported separately).
 * `cpu` reads the consumer's and the server's CPU time (ms); it is sampled over the same window,
 * from the first poll at which the consumer is known.
 */
export async function measureDrain(
  jsm: JetStreamManager,
  stream: string,
  total: number,
  opts: { everyMs?: number; timeoutMs?: number; cpu?: () => CpuReading } = {},
): Promise<DrainResult> {
  const every = opts.everyMs ?? 10;
  const t0 = performance.now();
  const deadline = t0 + (opts.timeoutMs ?? 300_000);
  let first: { t: number; remaining: number } | undefined;
  let cpuFrom: { remaining: number; cpu: CpuReading } | undefined;
  for (;;) {
    const remaining = (await jsm.streams.info(stream)).state.messages;
    const t = performance.now();
    const cpu = opts.cpu?.();
    if (!first && remaining < total) first = { t, remaining };
    if (!cpuFrom && first && cpu?.consumer !== undefined && remaining > 0) cpuFrom = { remaining, cpu };
    if (remaining === 0) {
      const seconds = first ? (t - first.t) / 1000 : 0;
      const drained = first?.remaining ?? 0;
      const perMsg = (a?: number, b?: number) => (a === undefined || b === undefined || !cpuFrom ? undefined : Math.round(((b - a) * 1000) / cpuFrom.remaining * 10) / 10);
      return {
        drained,
        seconds: Math.round(seconds * 1000) / 1000,
        rate: seconds > 0 ? Math.round(drained / seconds) : NaN,
        startupMs: Math.round((first?.t ?? t) - t0),
        totalMs: Math.round(t - t0),
        ...(cpuFrom && cpu ? { cpuUsPerMsg: { consumer: perMsg(cpuFrom.cpu.consumer, cpu.consumer), server: perMsg(cpuFrom.cpu.server, cpu.server) } } : {}),
      };
    }
    if (t > deadline) throw new Error(`${stream} still holds ${remaining} of ${total} messages after ${Math.round(t - t0)} ms`);
    await sleep(every);
  }
}

export type PendingPeaks = { samples: number; peakPending: number; peakAckPending: number };

/** Samples a consumer's num_pending and num_ack_pending every `everyMs` until stopped. */
export function samplePending(jsm: JetStreamManager, stream: string, consumer: string, everyMs = 50): { stop(): Promise<PendingPeaks> } {
  const peaks: PendingPeaks = { samples: 0, peakPending: 0, peakAckPending: 0 };
  let running = true;
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      try {
        const ci = await jsm.consumers.info(stream, consumer);
        peaks.samples++;
        peaks.peakPending = Math.max(peaks.peakPending, ci.num_pending);
        peaks.peakAckPending = Math.max(peaks.peakAckPending, ci.num_ack_pending);
      } catch {
        // the consumer may not exist yet; try again next tick
      }
      await sleep(Math.max(0, everyMs - (performance.now() - started)));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peaks;
    },
  };
}
