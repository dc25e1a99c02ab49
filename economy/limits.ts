import * as v from "valibot";

// Limits of what commands may carry. The ledger and the audit stream are append-only: whatever a
// command stores stays for good, so every free-text field has a limit and refuses NUL (PostgreSQL's
// text cannot hold it). A payload past a limit is dead-lettered as HOST_ERR_INVALID_PAYLOAD with
// the field and the limit named, before anything is written.

export const LIMITS = {
  /** An agent id: also a NATS subject token and a KV key. */
  agentId: 64,
  /** A transfer's memo, a reward's reason. */
  memo: 1_000,
  /** A message between agents, a prompt's question, a human's response. */
  text: 10_000,
  /** A prompt's context, as JSON. */
  contextBytes: 16_384,
  /** A prompt id, a responder's name. */
  name: 200,
} as const;

/** Free text of at most `max` characters, without NUL. */
export const freeText = (max: number) =>
  v.pipe(v.string(), v.maxLength(max, `is longer than ${max} characters`), v.check((s) => !s.includes("\u0000"), "contains NUL, which the ledger does not store"));

export const agentId = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1–64 letters, digits, _ or -"));

/** A positive amount of credits (whole micro-credits are checked by the ledger: INVALID_AMOUNT). */
export const credits = v.pipe(v.number(), v.gtValue(0));

/** A JSON object whose encoding fits `maxBytes`. */
export const boundedJson = (maxBytes: number) =>
  v.pipe(
    v.record(v.string(), v.unknown()),
    v.check((o) => Buffer.byteLength(JSON.stringify(o)) <= maxBytes, `is larger than ${maxBytes} bytes as JSON`),
    v.check((o) => !JSON.stringify(o).includes("\\u0000"), "contains NUL, which the ledger does not store"),
  );
