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
 * Runs a handler with its timeout. The handler's signal is aborted when the timeout passes (or by
 * `ac` from outside); the returned promise settles then even if the handler ignores the signal.
 */
export async function runHandler(fn: ResolvedFunction, payload: unknown, ctx: FunctionContext, ac: AbortController): Promise<unknown> {
  const timer = setTimeout(
    () => ac.abort(new HostError(ErrorCode.Timeout, `${fn.id} did not finish within ${fn.timeoutMs} ms`)),
    fn.timeoutMs,
  );
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(ac.signal.reason);
    if (ac.signal.aborted) onAbort();
    else ac.signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([Promise.resolve().then(() => fn.def.handler(payload, ctx)), aborted]);
  } finally {
    clearTimeout(timer);
    ac.signal.removeEventListener("abort", onAbort);
    aborted.catch(() => {});
  }
}
