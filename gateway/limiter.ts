import { setTimeout as sleep } from "node:timers/promises";
import PQueue from "p-queue";

// The per-MCP-server limiter in each worker: at most `maxConcurrent` calls in flight, and call
// starts at least `minTimeMs` apart, in the order they were scheduled. This is what bottleneck's
// `maxConcurrent` / `minTime` did, and it keeps bottleneck's algorithm: a call takes a slot and
// waits until `minTimeMs` after the previous call's start (holding the slot meanwhile, as bottleneck
// does); the next call waits for this one's start in turn.
//
// p-queue gives the slots. Its `interval` / `intervalCap` do not give the spacing: they count starts
// per fixed window, anchored at the first start, so two starts can fall on either side of a window
// edge a few milliseconds apart (intervalCap 1, interval 100 ms: starts 14 ms apart were measured);
// test/gateway.limiter.test.ts has that case.

export type LimiterOptions = { maxConcurrent: number; minTimeMs: number };

export class ServerLimiter {
  readonly #queue: PQueue;
  readonly #minTimeMs: number;
  /** Resolves to when (performance.now()) the last call to start did start; the next waits for it. */
  #lastStart: Promise<number> = Promise.resolve(-Infinity);
  /** Calls not yet started, so that stop() can reject them. */
  readonly #waiting = new Set<(err: Error) => void>();
  #stopped?: Error;

  constructor(opts: LimiterOptions) {
    this.#queue = new PQueue({ concurrency: opts.maxConcurrent });
    this.#minTimeMs = opts.minTimeMs;
  }

  /** Runs `fn` when a slot is free and its turn has come; resolves or rejects with it. */
  schedule<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    return new Promise<T>((resolve, reject) => {
      this.#waiting.add(reject);
      this.#queue
        .add(
          async () => {
            this.#waiting.delete(reject);
            if (this.#minTimeMs > 0) {
              // in turn: measured from when the previous call really started (a timer fires late,
              // never early), so no two starts are closer than minTimeMs
              const previous = this.#lastStart;
              let started!: (at: number) => void;
              this.#lastStart = new Promise<number>((r) => (started = r));
              const wait = (await previous) + this.#minTimeMs - performance.now();
              if (wait > 0) await sleep(wait);
              started(performance.now());
            }
            return fn();
          },
          { throwOnTimeout: true },
        )
        .then(resolve, reject);
    });
  }

  /**
   * Rejects every call that has not started with `reason`, and every later one; calls already
   * started run on (bottleneck's `stop({ dropWaitingJobs: true })`). Safe to call twice.
   */
  stop(reason: Error): void {
    this.#stopped ??= reason;
    this.#queue.clear();
    for (const reject of this.#waiting) reject(this.#stopped);
    this.#waiting.clear();
  }

  /** Calls holding a slot (running, or waiting out the spacing). */
  get running(): number {
    return this.#queue.pending;
  }

  /** Calls waiting for a slot. */
  get queued(): number {
    return this.#queue.size;
  }
}
