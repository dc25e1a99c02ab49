import { createHash } from "node:crypto";
import type { KV } from "@nats-io/kv";

// A rate limit shared by every worker and host: the generic cell rate algorithm (GCRA) with its one
// number per key, the theoretical arrival time, kept in a KV bucket and advanced with
// compare-and-swap. `limit` messages may pass back to back, then one per `periodMs / limit`.
// A message that is limited reserves the next free slot and waits for it, so the order of waiting
// messages is kept and no worker polls; a slot further away than the horizon is not reserved and
// the message is deferred (redelivered later) instead. Hosts' clocks should agree (NTP).

export type Reservation = { reserved: true; delayMs: number } | { reserved: false; retryInMs: number };

export type RateLimitSpec = { limit: number; periodMs: number };

const MAX_CAS_TRIES = 50;

/** KV keys allow [-/_=.a-zA-Z0-9]; anything else (or anything long) is hashed. */
export function kvSafeToken(raw: string): string {
  if (/^[A-Za-z0-9_-]{1,64}$/.test(raw)) return raw;
  return `h${createHash("sha256").update(raw).digest("hex").slice(0, 40)}`;
}

export class RateLimiter {
  readonly #kv: KV;
  constructor(kv: KV) {
    this.#kv = kv;
  }

  async reserve(scope: string, key: string, spec: RateLimitSpec, horizonMs: number): Promise<Reservation> {
    const kvKey = `rl.${kvSafeToken(scope)}.${kvSafeToken(key)}`;
    const interval = spec.periodMs / spec.limit;
    for (let tries = 0; tries < MAX_CAS_TRIES; tries++) {
      const entry = await this.#kv.get(kvKey);
      const stored = entry && entry.operation === "PUT" && entry.length > 0 ? Number(entry.string()) : Number.NaN;
      const now = Date.now();
      const tat = Number.isFinite(stored) ? Math.max(stored, now) : now;
      const nextTat = tat + interval;
      const delayMs = Math.max(0, Math.ceil(nextTat - spec.periodMs - now));
      if (delayMs > horizonMs) return { reserved: false, retryInMs: delayMs - Math.floor(horizonMs / 2) };
      try {
        if (entry) await this.#kv.update(kvKey, String(nextTat), entry.revision);
        else await this.#kv.create(kvKey, String(nextTat));
        return { reserved: true, delayMs };
      } catch (err) {
        if (!isCasConflict(err)) throw err;
        // another worker moved first: read again
      }
    }
    // Heavy contention: behave as limited rather than spin.
    return { reserved: false, retryInMs: Math.ceil(interval) };
  }
}

export function isCasConflict(err: unknown): boolean {
  const e = err as { code?: unknown; message?: string } | undefined;
  return e?.code === 10071 || /wrong last sequence|key exists/i.test(e?.message ?? "");
}
