// The economy's error catalogue. Every error has a stable code; they are tiny named classes,
// recognised by `instanceof` or by `name` + `code` (a module reloaded in dev may hold another copy
// of this file). The economy's functions map them to the host's outcomes: a refused operation
// (insufficient funds, unknown agent, bad amount, a reused message id) can never succeed, so it
// becomes a NonRetriableError; anything else is retried.

import { CodedError } from "../host/errors.ts";
import { formatCredits } from "./money.ts";

export const EconomyErrorCode = {
  InsufficientFunds: "INSUFFICIENT_FUNDS",
  UnknownAgent: "UNKNOWN_AGENT",
  InvalidAmount: "INVALID_AMOUNT",
  InvalidArgument: "INVALID_ARGUMENT",
  /** The same source message id was used before for a different operation. */
  IdempotencyConflict: "IDEMPOTENCY_CONFLICT",
  /** A tick for a window that has not closed yet (by the window clock). */
  TickNotDue: "TICK_NOT_DUE",
  /** A tick whose window id is no window at all: negative, not an integer, an hour old, far in the future. */
  InvalidWindow: "INVALID_WINDOW",
  /** An agent id that is taken (genesis, spawn). */
  AgentExists: "AGENT_EXISTS",
  /** A reward names a prompt that is not the agent's. */
  UnknownPrompt: "UNKNOWN_PROMPT",
  /** A reward answers a prompt that is answered already. */
  PromptClosed: "PROMPT_CLOSED",
  /** A bid the market refuses (the reason says which rule). */
  BelowMarketPrice: "BELOW_MARKET_PRICE",
  ExceedsSupply: "EXCEEDS_SUPPLY",
  InvalidBid: "INVALID_BID",
  /** Free text past its limit, or with characters the ledger does not keep (NUL). */
  TextTooLong: "TEXT_TOO_LONG",
  /** A command of, or credits to, an agent an operator terminated (admin.agent.terminate); terminating it again. */
  AgentTerminated: "AGENT_TERMINATED",
  /** A request whose body names another agent than the one in its subject (the sender, whom credentials vouch for). */
  IdentityMismatch: "IDENTITY_MISMATCH",
  /** A genesis or spawn that names a workspace template agent/templates does not have. */
  UnknownTemplate: "UNKNOWN_TEMPLATE",
  /** An event that does not match the catalogue: a bug in the function that states it. */
  InvalidEvent: "ECONOMY_INVALID_EVENT",
  Migration: "MIGRATION_FAILED",
  /** The database has no ledger yet (or lost its system accounts): `npm run economy -- migrate`. */
  NotMigrated: "ECONOMY_NOT_MIGRATED",
  /** Something the code relies on did not hold (a row that must exist did not): a bug or a race to look into. */
  Invariant: "ECONOMY_INVARIANT",
  Config: "ECONOMY_CONFIG",
  /** The embedded PostgreSQL (economy/embeddedPostgres.ts): binaries missing, did not start, data directory not accessible. */
  EmbeddedPostgresMissing: "EMBEDDED_POSTGRES_MISSING",
  EmbeddedPostgresStart: "EMBEDDED_POSTGRES_START",
  EmbeddedPostgresAccess: "EMBEDDED_POSTGRES_ACCESS",
} as const;
export type EconomyErrorCode = (typeof EconomyErrorCode)[keyof typeof EconomyErrorCode];

export class EconomyError extends CodedError<EconomyErrorCode> {
  override name = "EconomyError";
}

/** The debited agent's available balance (balance − reserved by open bids) is below the amount. */
export class InsufficientFundsError extends EconomyError {
  override name = "InsufficientFundsError";
  readonly agentId: string;
  readonly requested: bigint;
  readonly balance: bigint;
  readonly reserved: bigint;
  readonly available: bigint;
  constructor(agentId: string, f: { requested: bigint; balance: bigint; reserved: bigint }) {
    const available = f.balance - f.reserved;
    super(
      EconomyErrorCode.InsufficientFunds,
      `agent ${agentId} has ${formatCredits(available)} credits available (balance ${formatCredits(f.balance)}, reserved ${formatCredits(f.reserved)}), ${formatCredits(f.requested)} requested`,
    );
    this.agentId = agentId;
    this.requested = f.requested;
    this.balance = f.balance;
    this.reserved = f.reserved;
    this.available = available;
  }
}

export class UnknownAgentError extends EconomyError {
  override name = "UnknownAgentError";
  readonly agentId: string;
  constructor(agentId: string) {
    super(EconomyErrorCode.UnknownAgent, `unknown agent ${agentId} (no account agent:${agentId})`);
    this.agentId = agentId;
  }
}

export class InvalidAmountError extends EconomyError {
  override name = "InvalidAmountError";
  constructor(message: string) {
    super(EconomyErrorCode.InvalidAmount, message);
  }
}

export class InvalidArgumentError extends EconomyError {
  override name = "InvalidArgumentError";
  constructor(message: string) {
    super(EconomyErrorCode.InvalidArgument, message);
  }
}

export class IdempotencyConflictError extends EconomyError {
  override name = "IdempotencyConflictError";
  readonly sourceMsgId: string;
  constructor(sourceMsgId: string, detail: string) {
    super(EconomyErrorCode.IdempotencyConflict, `source message id ${sourceMsgId} was already used for ${detail}`);
    this.sourceMsgId = sourceMsgId;
  }
}

/** A tick the clearing refuses: only the scheduler's tick of a closed window clears it. */
export class TickRefusedError extends EconomyError {
  override name = "TickRefusedError";
  readonly windowId: unknown;
  constructor(code: typeof EconomyErrorCode.TickNotDue | typeof EconomyErrorCode.InvalidWindow, windowId: unknown, message: string) {
    super(code, `window ${String(windowId)}: ${message}`);
    this.windowId = windowId;
  }
}

export class MigrationError extends EconomyError {
  override name = "MigrationError";
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super(EconomyErrorCode.Migration, `${file}: ${message}`, options);
    this.file = file;
  }
}

const CODES = new Set<string>(Object.values(EconomyErrorCode));

export function isEconomyError(err: unknown): err is EconomyError {
  if (err instanceof EconomyError) return true;
  const code = (err as { code?: unknown } | undefined)?.code;
  return err instanceof Error && typeof code === "string" && CODES.has(code) && err.name.endsWith("Error");
}

/** Codes of the economy's own faults, as opposed to refusals of what a command asks. */
const FAULTS = new Set<string>([
  EconomyErrorCode.Migration,
  EconomyErrorCode.NotMigrated,
  EconomyErrorCode.Invariant,
  EconomyErrorCode.Config,
  EconomyErrorCode.InvalidEvent,
  EconomyErrorCode.EmbeddedPostgresMissing,
  EconomyErrorCode.EmbeddedPostgresStart,
  EconomyErrorCode.EmbeddedPostgresAccess,
]);

/**
 * Refusals that can never succeed on a retry (the economy's functions turn these into
 * NonRetriableError). The economy's own faults (a migration, the configuration, a broken
 * invariant) are not refusals.
 */
export function isRefusal(err: unknown): err is EconomyError {
  return isEconomyError(err) && !FAULTS.has(err.code);
}

/** A refusal with its catalogue code: the command is dead-lettered with it as the reason. */
export function refuse(code: EconomyErrorCode, message: string): EconomyError {
  return new EconomyError(code, message);
}

// ---- What PostgreSQL's errors mean for a retry -------------------------------------------------

/** Error codes of a connection that failed, was refused, or ended under a query (node and postgres.js). */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);

/** SQLSTATE classes: 08 connection exception, 57P01–57P03 admin shutdown / crash / cannot connect now, 53 insufficient resources. */
function sqlState(err: unknown): string | undefined {
  const e = err as { code?: unknown; errno?: unknown } | undefined;
  const code = typeof e?.code === "string" ? e.code : undefined;
  return code && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** True when `err` (or its cause) is a lost, refused or shut-down database connection: worth waiting out. */
export function isConnectionError(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_CODES.has(code)) return true;
    const state = sqlState(e);
    if (state && (state.startsWith("08") || state === "57P01" || state === "57P02" || state === "57P03" || state.startsWith("53"))) return true;
  }
  return false;
}

/** SQLSTATE 40001 (serialization failure) or 40P01 (deadlock detected): the transaction may simply be run again. */
export function isSerializationError(err: unknown): boolean {
  const state = sqlState(err);
  return state === "40001" || state === "40P01";
}

/**
 * The economy's one error classifier (streams.config.ts `classifyError`), applied by the host to
 * whatever an economy function throws:
 * - a domain refusal, or PostgreSQL class 22 (data exception: bad text, number out of range, bad
 *   syntax) or 23 (integrity constraint): the same input fails the same way → `non-retriable`,
 *   dead-lettered at once with its code;
 * - a lost or refused connection, a server shutting down → `transient`: retried without spending
 *   the message's attempts, for as long as the outage lasts;
 * - 40001 / 40P01 → `retriable` (the ledger retries them inside the transaction first), and a
 *   unique violation of an idempotency key (a message delivered twice at once) → `retriable`;
 * - anything else: the host's default (retried to the budget).
 */
export function classifyEconomyError(err: unknown): "non-retriable" | "retriable" | "transient" | undefined {
  if (isRefusal(err)) return "non-retriable";
  if (isConnectionError(err)) return "transient";
  const state = sqlState(err);
  if (!state) return undefined;
  // a unique idempotency key (a source message id) taken by a concurrent transaction: the same
  // message delivered twice at once (a redelivery while the first delivery still ran). The retry
  // finds the first one's row and answers as a duplicate.
  if (state === "23505" && /(source_msg_id|event_id)_key$/.test(String((err as { constraint_name?: unknown }).constraint_name ?? ""))) return "retriable";
  if (state.startsWith("22") || state.startsWith("23")) return "non-retriable";
  if (state.startsWith("40")) return "retriable";
  return undefined;
}
