import { ErrorCode, HostError } from "./errors.ts";
import type { KV } from "@nats-io/kv";
import { isCasConflict, kvSafeToken } from "./rateLimit.ts";

// Two kinds of record in the `host_runs` bucket, both expiring with the bucket's TTL:
//  - done.<fn>.<key>: a handler with an idempotency key completed; a redelivery is acked unrun.
//  - defer.<consumer>.<seq>: how many deliveries of a message were deferrals (rate limit,
//    backpressure, shutdown) rather than failures, so they are not charged to maxDeliver.
//  - trial.<consumer>.<seq>: how many times a message past its budget was run alone (see
//    JetStreamTrigger: a worker that dies is not the message's fault until it dies running it alone).
// Deferral records are read only for redeliveries, so the first delivery costs nothing.

export class RunRecords {
  readonly #kv: KV;
  constructor(kv: KV) {
    this.#kv = kv;
  }

  #doneKey(fn: string, key: string) {
    return `done.${kvSafeToken(fn)}.${kvSafeToken(key)}`;
  }

  async isDone(fn: string, key: string): Promise<boolean> {
    const e = await this.#kv.get(this.#doneKey(fn, key));
    return e !== null && e.operation === "PUT";
  }

  async markDone(fn: string, key: string, msgId: string): Promise<void> {
    await this.#kv.put(this.#doneKey(fn, key), JSON.stringify({ msg_id: msgId, at: new Date().toISOString() }));
  }

  #deferKey(consumer: string, seq: number) {
    return `defer.${kvSafeToken(consumer)}.${seq}`;
  }

  async deferrals(consumer: string, seq: number): Promise<number> {
    const e = await this.#kv.get(this.#deferKey(consumer, seq));
    if (!e || e.operation !== "PUT") return 0;
    const n = Number(e.string());
    return Number.isFinite(n) ? n : 0;
  }

  addDeferral(consumer: string, seq: number): Promise<number> {
    return this.#increment(this.#deferKey(consumer, seq));
  }

  #trialKey(consumer: string, seq: number) {
    return `trial.${kvSafeToken(consumer)}.${seq}`;
  }

  /** Counts one run of the message alone; returns how many there have been, this one included. */
  addTrial(consumer: string, seq: number): Promise<number> {
    return this.#increment(this.#trialKey(consumer, seq));
  }

  async clearTrials(consumer: string, seq: number): Promise<void> {
    await this.#kv.purge(this.#trialKey(consumer, seq));
  }

  async #increment(key: string): Promise<number> {
    for (let i = 0; i < 50; i++) {
      const e = await this.#kv.get(key);
      const n = e && e.operation === "PUT" ? Number(e.string()) || 0 : 0;
      try {
        if (e) await this.#kv.update(key, String(n + 1), e.revision);
        else await this.#kv.create(key, String(n + 1));
        return n + 1;
      } catch (err) {
        if (!isCasConflict(err)) throw err;
      }
    }
    throw new HostError(ErrorCode.Contention, `could not count ${key}: too much contention`);
  }

  async clearDeferrals(consumer: string, seq: number): Promise<void> {
    await this.#kv.purge(this.#deferKey(consumer, seq));
  }
}
