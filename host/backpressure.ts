import { DiscardPolicy, RetentionPolicy, type JetStreamManager, type StreamInfo } from "@nats-io/jetstream";
import { setTimeout as sleep } from "node:timers/promises";
import { StreamFullError } from "./errors.ts";

// Backpressure from stream depth. Every stream a worker publishes to (learned on first publish) has
// its depth read at most once per `cacheMs`; above `highWater` of its hard limit, publishes wait and
// the functions that feed it pull more slowly, so the hard limit (discard new) is rarely reached.
// When it is, the server's refusal becomes a StreamFullError that the host turns into a deferral.

export type Depth = { stream: string; fill: number; messages: number; bytes: number; at: number };

export type BackpressureOptions = { highWater: number; cacheMs: number; pauseMs: number };

export class Backpressure {
  readonly #jsm: JetStreamManager;
  readonly #opts: BackpressureOptions;
  readonly #depth = new Map<string, Depth>();
  readonly #refreshing = new Map<string, Promise<Depth | undefined>>();
  readonly #streamOfSubject = new Map<string, string | null>();

  constructor(jsm: JetStreamManager, opts: BackpressureOptions) {
    this.#jsm = jsm;
    this.#opts = opts;
  }

  get options(): BackpressureOptions {
    return this.#opts;
  }

  /** The stream capturing `subject` (cached; null when none does). */
  async streamFor(subject: string): Promise<string | null> {
    const known = this.#streamOfSubject.get(subject);
    if (known !== undefined) return known;
    let name: string | null;
    try {
      name = await this.#jsm.streams.find(subject);
    } catch (err) {
      // Only a definite "no stream" answer is remembered; a timeout is asked again next time.
      if (!/no stream/i.test((err as Error).message ?? "")) return null;
      name = null;
    }
    if (this.#streamOfSubject.size > 10_000) this.#streamOfSubject.clear();
    this.#streamOfSubject.set(subject, name);
    return name;
  }

  /**
   * Without waiting: whether a publish on `subject` may go now — true when the subject's stream is
   * known and below high water (a stale reading counts, and starts a refresh), or no stream captures
   * it; undefined when either is not known yet (then ask streamFor and waitBelowHighWater).
   */
  clearNow(subject: string): { stream: string | null } | undefined {
    const stream = this.#streamOfSubject.get(subject);
    if (stream === undefined) return undefined;
    if (stream === null) return { stream };
    const d = this.#depth.get(stream);
    if (!d) return undefined;
    if (Date.now() - d.at >= this.#opts.cacheMs) void this.depth(stream);
    return d.fill < this.#opts.highWater ? { stream } : undefined;
  }

  /** Cached depth reading; refreshed in the background once older than cacheMs. */
  async depth(stream: string): Promise<Depth | undefined> {
    const cached = this.#depth.get(stream);
    if (cached && Date.now() - cached.at < this.#opts.cacheMs) return cached;
    let pending = this.#refreshing.get(stream);
    if (!pending) {
      pending = this.#read(stream).finally(() => this.#refreshing.delete(stream));
      this.#refreshing.set(stream, pending);
    }
    // A stale reading is good enough to decide now; the refresh lands for the next caller.
    return cached ?? (await pending);
  }

  async #read(stream: string): Promise<Depth | undefined> {
    let info: StreamInfo;
    try {
      info = await this.#jsm.streams.info(stream);
    } catch {
      return this.#depth.get(stream);
    }
    const { max_msgs, max_bytes } = info.config;
    // a stream that discards old messages at its limit never refuses a publish: nothing to slow for
    const discardsOld = info.config.discard === DiscardPolicy.Old && info.config.retention !== RetentionPolicy.Workqueue;
    const fills = discardsOld ? [0] : [
      max_msgs > 0 ? info.state.messages / max_msgs : 0,
      max_bytes > 0 ? info.state.bytes / max_bytes : 0,
    ];
    const d: Depth = { stream, fill: Math.max(...fills), messages: info.state.messages, bytes: info.state.bytes, at: Date.now() };
    this.#depth.set(stream, d);
    return d;
  }

  async isAboveHighWater(stream: string): Promise<boolean> {
    const d = await this.depth(stream);
    return d !== undefined && d.fill >= this.#opts.highWater;
  }

  /**
   * Waits while `stream` is above high water, up to `maxWaitMs`. Returns true when it is below
   * (or unknown), false when still above after the wait.
   */
  async waitBelowHighWater(stream: string, maxWaitMs: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + maxWaitMs;
    while (await this.isAboveHighWater(stream)) {
      if (Date.now() >= deadline || signal?.aborted) return false;
      await sleep(Math.min(this.#opts.pauseMs, Math.max(1, deadline - Date.now())), undefined, { signal }).catch(() => {});
    }
    return true;
  }

  /** Records that a publish was refused, so readers see the stream as full at once. */
  markFull(stream: string): void {
    const d = this.#depth.get(stream);
    this.#depth.set(stream, { stream, fill: 1, messages: d?.messages ?? 0, bytes: d?.bytes ?? 0, at: Date.now() });
  }
}

const FULL = /maximum (messages|bytes)( per subject)? exceeded|resource limits exceeded|insufficient resources/i;

/** Maps the server's discard-new refusal onto StreamFullError; other errors pass through. */
export function asStreamFull(err: unknown, stream: string | null): unknown {
  const message = (err as Error | undefined)?.message ?? "";
  if (FULL.test(message)) return new StreamFullError(stream ?? "unknown", `stream ${stream ?? "?"} is full: ${message}`, { cause: err });
  return err;
}
