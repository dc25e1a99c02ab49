// One error catalogue for the host. Every error the host raises or reports has a stable code;
// control-flow errors thrown by handlers are tiny named classes recognised by `instanceof` or by
// `name` (a function module reloaded in dev may hold another copy of this file).

export const ErrorCode = {
  Config: "HOST_ERR_CONFIG",
  FunctionLoad: "HOST_ERR_FUNCTION_LOAD",
  MalformedJson: "HOST_ERR_MALFORMED_JSON",
  InvalidPayload: "HOST_ERR_INVALID_PAYLOAD",
  PayloadTooLarge: "HOST_ERR_PAYLOAD_TOO_LARGE",
  NonRetriable: "HOST_ERR_NON_RETRIABLE",
  RetryAfter: "HOST_ERR_RETRY_AFTER",
  Timeout: "HOST_ERR_TIMEOUT",
  MaxDeliveries: "HOST_ERR_MAX_DELIVERIES",
  /** A message past its budget whose runs alone also ended without an outcome: it kills its worker. */
  Poison: "HOST_ERR_POISON",
  StreamFull: "HOST_ERR_STREAM_FULL",
  Drift: "HOST_ERR_STREAM_DRIFT",
  /** A stream a command needs does not exist on the server it talked to. */
  StreamMissing: "HOST_ERR_STREAM_MISSING",
  NatsServerMissing: "HOST_ERR_NATS_SERVER_MISSING",
  Handler: "HOST_ERR_HANDLER",
  /** A subject outside the message contract's taxonomy (contract/subjects.ts). */
  InvalidSubject: "HOST_ERR_INVALID_SUBJECT",
  /** An event envelope that does not validate, or holds values JSON cannot carry. */
  Envelope: "HOST_ERR_ENVELOPE",
  /** A resource's (or a function's) setup failed, or resources depend on each other in a cycle. */
  ResourceSetup: "HOST_ERR_RESOURCE_SETUP",
  /** A command line the CLI cannot run: an unknown command or flag, a bad value. */
  Usage: "HOST_ERR_USAGE",
  /** The CLI could not connect to the NATS server it resolved. */
  NatsUnreachable: "HOST_ERR_NATS_UNREACHABLE",
  /** A request whose reply subject is not an inbox: not answered (host/requestTrigger.ts). */
  ReplySubject: "HOST_ERR_REPLY_SUBJECT",
  /** A NATS credentials file that cannot be read or is not one. */
  NatsCredentials: "HOST_ERR_NATS_CREDENTIALS",
  /** A local nats-server (host dev, tests) exited or did not report its ports during start-up. */
  NatsServerStart: "HOST_ERR_NATS_SERVER_START",
  /** `host dlq show|replay` of a sequence that holds no dead letter. */
  DeadLetterNotFound: "HOST_ERR_DEAD_LETTER_NOT_FOUND",
  /** A stream could not be read (`host audit verify`): the cause says why. */
  StreamRead: "HOST_ERR_STREAM_READ",
  /** A KV counter kept losing its compare-and-swap to other workers. */
  Contention: "HOST_ERR_KV_CONTENTION",
  Unknown: "HOST_ERR_UNKNOWN",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * The one shape of the project's errors: a stable `code` from a package's catalogue (host here,
 * the economy, the gateway, the scenarios each have theirs) and a message for people.
 */
export class CodedError<C extends string = string> extends Error {
  readonly code: C;
  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export class HostError extends CodedError<ErrorCode> {
  override name = "HostError";
}

/** A command line a CLI cannot run (exit 64 with the usage text). Every CLI of the project uses this one. */
export class UsageError extends HostError {
  override name = "UsageError";
  constructor(message: string) {
    super(ErrorCode.Usage, message);
  }
}

/** Thrown by a handler: the message can never succeed; it is terminated and dead-lettered. */
export class NonRetriableError extends Error {
  override name = "NonRetriableError";
  readonly code: string = ErrorCode.NonRetriable;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options);
    if (options?.code) this.code = options.code;
  }
}

/** Thrown by a handler: try again after `retryAfterMs` (counts as a failed attempt). */
export class RetryAfterError extends Error {
  override name = "RetryAfterError";
  readonly code = ErrorCode.RetryAfter;
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number, options?: { cause?: unknown }) {
    super(message, options);
    this.retryAfterMs = Math.max(0, Math.floor(retryAfterMs));
  }
}

/**
 * A publish was refused because the target stream is at its hard limit (discard new). The message
 * being handled is put back with a delay without spending its failure budget.
 */
export class StreamFullError extends HostError {
  override name = "StreamFullError";
  readonly stream: string;
  constructor(stream: string, message: string, options?: { cause?: unknown }) {
    super(ErrorCode.StreamFull, message, options);
    this.stream = stream;
  }
}

export function isNonRetriable(err: unknown): err is NonRetriableError {
  return err instanceof NonRetriableError || (err as Error | undefined)?.name === "NonRetriableError";
}

export function isRetryAfter(err: unknown): err is RetryAfterError {
  return (
    err instanceof RetryAfterError ||
    ((err as Error | undefined)?.name === "RetryAfterError" &&
      typeof (err as RetryAfterError).retryAfterMs === "number")
  );
}

export function isStreamFull(err: unknown): err is StreamFullError {
  return err instanceof StreamFullError || (err as Error | undefined)?.name === "StreamFullError";
}

/** Turns anything thrown into an Error, keeping the original as `cause`. */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === "string") return new Error(thrown);
  let text: string;
  try {
    text = JSON.stringify(thrown);
  } catch {
    text = String(thrown);
  }
  return new Error(`non-error thrown: ${text}`, { cause: thrown });
}

/**
 * What a host-wide classifier (`classifyError` in streams.config.ts) says of an error a handler threw:
 * - `non-retriable`: can never succeed (bad input, a domain refusal, a constraint): term + dead letter at once;
 * - `retriable`: may succeed on another attempt: nak with backoff, counted against maxDeliver;
 * - `transient`: a dependency is unavailable (database restarting, connection reset): nak with
 *   backoff without spending the message's attempts, so an outage dead-letters nothing.
 * `undefined` leaves the decision to the host (retriable unless a NonRetriableError).
 */
export type ErrorClass = "non-retriable" | "retriable" | "transient";
export type ErrorClassifier = (err: unknown) => ErrorClass | undefined;

/** The classifier's verdict, or undefined when it has none or throws (a classifier must not break handling). */
export function classify(classifier: ErrorClassifier | undefined, err: unknown): ErrorClass | undefined {
  if (!classifier) return undefined;
  try {
    return classifier(err);
  } catch {
    return undefined;
  }
}

export type SerializedError = { name: string; code: string; message: string };

/** The `{ name, code, message }` shape used in replies and dead letters. */
export function serializeError(thrown: unknown, maxMessage = 2000): SerializedError {
  const err = coerceError(thrown);
  const raw = (err as Error & { code?: unknown }).code;
  const code = typeof raw === "string" && raw ? raw : ErrorCode.Handler;
  const message = err.message.length > maxMessage ? `${err.message.slice(0, maxMessage)}…` : err.message;
  return { name: err.name, code, message };
}
