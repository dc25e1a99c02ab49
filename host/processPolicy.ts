import { classify, coerceError, type ErrorClassifier } from "./errors.ts";
import type { Logger } from "./log.ts";

// What a worker does with an error nobody caught.
//
// - An unhandled promise rejection is logged and the worker keeps running. The host settles every
//   message through its own code paths, so a stray rejection (a client library rejecting a promise
//   nobody awaited when its connection dropped) leaves no message in an unknown state; Node's
//   default would kill the process, and with it every message it holds. The config's classifier
//   says whether it was a lost dependency (`transient`: a warning, expected during an outage) or
//   something else (an error worth reading); either way nothing is known to be half done, so the
//   worker runs on. A storm of them (a pool of connections all dropping) is logged at most
//   `maxLogsPerWindow` times per `logWindowMs`, then counted.
// - An uncaught exception is different: it unwound a stack in the middle of something, and
//   nothing says what that left half done. It is logged, then `onFatal` stops the worker (the
//   graceful stop hands back what it holds), and the supervisor starts a fresh one. If the stop
//   does not finish within `fatalExitMs` the process exits 1 anyway.

export type ProcessPolicyOptions = {
  /** Called once, on the first uncaught exception: stop the worker, exiting non-zero. */
  onFatal: (err: Error) => void;
  /** How long onFatal may take before the process exits 1 regardless. Default 10 s. */
  fatalExitMs?: number;
  /** The config's classifyError: tells a lost dependency from anything else in the log line. */
  classifyError?: ErrorClassifier;
  /** Rejections logged per window before the rest are only counted. Default 10 per 10 s. */
  maxLogsPerWindow?: number;
  logWindowMs?: number;
};

/** Stack lines kept in a log line: enough to find the caller, never a wall of text. */
const STACK_LINES = 12;

/** Message characters kept (the cause's: a quarter of it). */
const MESSAGE_CHARS = 2000;

/** The error as a log field: name, code (when it has one), bounded message, first stack frames, cause. */
export function errorForLog(thrown: unknown, depth = 0): Record<string, unknown> {
  const err = coerceError(thrown);
  const max = depth === 0 ? MESSAGE_CHARS : MESSAGE_CHARS / 4;
  const out: Record<string, unknown> = { name: err.name, message: err.message.length > max ? `${err.message.slice(0, max)}…` : err.message };
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" || typeof code === "number") out.code = code;
  if (depth === 0 && err.stack) out.stack = err.stack.split("\n").slice(1, STACK_LINES + 1).map((l) => l.trim()).join("\n");
  if (depth < 2 && thrown instanceof Error && err.cause !== undefined) out.cause = errorForLog(err.cause, depth + 1);
  return out;
}

/** Installs the handlers; returns a function that removes them (tests). */
export function installProcessPolicy(log: Logger, opts: ProcessPolicyOptions): () => void {
  const maxLogs = opts.maxLogsPerWindow ?? 10;
  const windowMs = opts.logWindowMs ?? 10_000;
  let windowStart = 0;
  let logged = 0;
  let suppressed = 0;
  let summary: NodeJS.Timeout | undefined;
  const reportSuppressed = () => {
    summary = undefined;
    if (suppressed === 0) return;
    log.warn({ suppressed, window_ms: windowMs }, "more unhandled promise rejections; not logged one by one");
    suppressed = 0;
  };

  const onRejection = (reason: unknown) => {
    const now = Date.now();
    if (now - windowStart >= windowMs) {
      windowStart = now;
      logged = 0;
    }
    if (logged >= maxLogs) {
      suppressed++;
      summary ??= setTimeout(reportSuppressed, windowStart + windowMs - now).unref();
      return;
    }
    logged++;
    const verdict = classify(opts.classifyError, reason);
    const fields = { err: errorForLog(reason), class: verdict ?? "unknown" };
    if (verdict === "transient") log.warn(fields, "unhandled promise rejection (a dependency is unavailable); the worker keeps running");
    else log.error(fields, "unhandled promise rejection; the worker keeps running");
  };

  let fatal = false;
  const onException = (err: Error, origin: string) => {
    log.error({ err: errorForLog(err), origin }, "uncaught exception; stopping the worker so that a fresh one replaces it");
    if (fatal) return;
    fatal = true;
    // however the process ends from here (the loop running dry included), it ends as a failure
    process.exitCode = 1;
    setTimeout(() => {
      log.error({ fatal_exit_ms: opts.fatalExitMs ?? 10_000 }, "the stop after an uncaught exception did not finish; exiting");
      process.exit(1);
    }, opts.fatalExitMs ?? 10_000).unref();
    try {
      opts.onFatal(err);
    } catch (stopErr) {
      log.error({ err: errorForLog(stopErr) }, "stopping after an uncaught exception failed");
      process.exit(1);
    }
  };
  process.on("unhandledRejection", onRejection);
  process.on("uncaughtException", onException);
  return () => {
    process.off("unhandledRejection", onRejection);
    process.off("uncaughtException", onException);
    if (summary) clearTimeout(summary);
  };
}
