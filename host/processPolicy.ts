import { coerceError } from "./errors.ts";
import type { Logger } from "./log.ts";

// What a worker does with an error nobody caught.
//
// - An unhandled promise rejection is logged with its error and the worker keeps running: the
//   host settles every message through its own code paths, so a stray rejection (a client library
//   rejecting a promise nobody awaited when a connection dropped) leaves no message in an unknown
//   state. Node's default would kill the process, and with it every message it holds.
// - An uncaught exception is different: it unwound a stack in the middle of something, and
//   nothing says what that left half done. It is logged, then `onFatal` stops the worker (the
//   graceful stop hands back what it holds), and the supervisor starts a fresh one. If the stop
//   does not finish within `fatalExitMs` the process exits 1 anyway.

export type ProcessPolicyOptions = {
  /** Called once on the first uncaught exception: stop the worker, exiting non-zero. */
  onFatal: (err: Error) => void;
  /** How long onFatal may take before the process exits 1 regardless. Default 10 s. */
  fatalExitMs?: number;
};

/** Installs the handlers; returns a function that removes them (tests). */
export function installProcessPolicy(log: Logger, opts: ProcessPolicyOptions): () => void {
  let fatal = false;
  const onRejection = (reason: unknown) => {
    log.error({ err: coerceError(reason) }, "unhandled promise rejection; the worker keeps running");
  };
  const onException = (err: Error, origin: string) => {
    log.error({ err: coerceError(err), origin }, "uncaught exception; stopping the worker so that a fresh one replaces it");
    if (fatal) return;
    fatal = true;
    setTimeout(() => process.exit(1), opts.fatalExitMs ?? 10_000).unref();
    try {
      opts.onFatal(err);
    } catch (stopErr) {
      log.error({ err: coerceError(stopErr) }, "stopping after an uncaught exception failed");
      process.exit(1);
    }
  };
  process.on("unhandledRejection", onRejection);
  process.on("uncaughtException", onException);
  return () => {
    process.off("unhandledRejection", onRejection);
    process.off("uncaughtException", onException);
  };
}
