import type { FunctionContext } from "./define.ts";
import { ErrorCode, HostError } from "./errors.ts";
import type { ResolvedFunction } from "./resolved.ts";

/** Reason given to a handler's signal when the host shuts down past its grace period. */
export class ShutdownAbort extends Error {
  override name = "ShutdownAbort";
  constructor() {
    super("the host is shutting down");
  }
}

/**
 * The cancellation of one handler run. Its AbortSignal is made only when the handler reads
 * `ctx.signal`: most handlers never do, and an AbortController per message is measurable.
 */
export class Cancellation {
  #ac?: AbortController;
  #reason?: unknown;
  #aborted = false;
  #onAbort?: (reason: unknown) => void;

  get signal(): AbortSignal {
    if (!this.#ac) {
      this.#ac = new AbortController();
      if (this.#aborted) this.#ac.abort(this.#reason);
    }
    return this.#ac.signal;
  }

  get aborted(): boolean {
    return this.#aborted;
  }

  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#ac?.abort(reason);
    this.#onAbort?.(reason);
  }

  /** Rejects with the abort reason when (or if already) aborted. */
  rejection(): Promise<never> {
    return new Promise<never>((_, reject) => {
      if (this.#aborted) reject(this.#reason);
      else this.#onAbort = reject;
    });
  }
}

/**
 * Runs a handler with its timeout. The handler's signal is aborted when the timeout passes (or by
 * `cancel` from outside); the returned promise settles then even if the handler ignores the signal.
 */
export async function runHandler(fn: ResolvedFunction, payload: unknown, ctx: FunctionContext, cancel: Cancellation): Promise<unknown> {
  const timer = setTimeout(() => cancel.abort(new HostError(ErrorCode.Timeout, `${fn.id} did not finish within ${fn.timeoutMs} ms`)), fn.timeoutMs);
  const aborted = cancel.rejection();
  try {
    return await Promise.race([Promise.resolve().then(() => fn.def.handler(payload, ctx)), aborted]);
  } finally {
    clearTimeout(timer);
    aborted.catch(() => {});
  }
}

export const TIMED_OUT = Symbol("timed out");

/** `p`, or TIMED_OUT when it has not settled within `ms` (the timer is cleared either way). */
export function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
