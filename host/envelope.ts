import { nuid } from "@nats-io/transport-node";
import * as v from "valibot";
import { canonicalJson, nonJsonReason, sha256Hex } from "./canonicalJson.ts";
import { ErrorCode, HostError } from "./errors.ts";

// The event envelope, version 1. Events (facts, past tense) travel as envelopes; commands and
// requests stay plain JSON. The envelope knows nothing about what the events mean: `type`,
// `payload` and `metadata` belong to whoever defines the events. docs/messaging.md is the reference.
//
// Evolution: `version` is "<major>.<minor>". Within major 1 only additive changes happen (a new
// optional field, a new metadata key), so a v1 reader accepts every "1.<minor>" and keeps the
// fields it does not know: the hash covers them, and an envelope forwarded without them would no
// longer verify. Removing a field or changing what one means is major 2.

/** What this code writes. Readers accept any `1.<minor>`. */
export const ENVELOPE_VERSION = "1.0";
const V1 = /^1\.(0|[1-9][0-9]*)$/;

// ids travel in headers too (the event id is its Nats-Msg-Id; correlation and causation have
// headers of their own), so they are visible ASCII without spaces
const Name = v.pipe(v.string(), v.minLength(1), v.maxLength(256), v.regex(/^[\x21-\x7e]+$/, "must be visible ASCII without spaces"));
const hex = (digits: number) => v.pipe(v.string(), v.regex(new RegExp(`^[0-9a-f]{${digits}}$`), `must be ${digits} lowercase hex digits`));
const notZero = (s: string) => !/^0+$/.test(s);
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** A v1 envelope. Loose objects: unknown top-level fields and cost units are kept, not stripped. */
export const EnvelopeSchema = v.looseObject({
  version: v.pipe(v.string(), v.regex(V1, 'must be "1.<minor>" for a v1 reader')),
  /** Unique per event; also the message's Nats-Msg-Id, so a re-publish is de-duplicated. */
  id: Name,
  /** What happened, e.g. `bid_placed`; the catalogue of types lives with the events' owner. */
  type: Name,
  /** Who states the fact: an agent id, a function id. */
  from: Name,
  /** Whom it is addressed to, when anyone. */
  to: v.nullish(Name),
  /** The conversation (scenario run, user action) it belongs to; a root event's own id. */
  correlation_id: Name,
  /** The id of the event or message that caused it; null for a root event. */
  causation_id: v.nullable(Name),
  /** W3C trace context of the span that produced it. */
  trace_id: v.nullish(v.pipe(hex(32), v.check(notZero, "must not be all zeros"))),
  span_id: v.nullish(v.pipe(hex(16), v.check(notZero, "must not be all zeros"))),
  /** RFC 3339 date-time, when the fact happened. */
  timestamp: v.pipe(v.string(), v.regex(RFC3339, "must be an RFC 3339 date-time"), v.check((s) => !Number.isNaN(Date.parse(s)), "must be a real date")),
  /** What the event cost its sender; absent or null when nothing was charged. */
  cost: v.nullish(v.looseObject({ credits: v.pipe(v.number(), v.finite(), v.minValue(0)) })),
  /** Any JSON value (null when there is nothing to say). */
  payload: v.custom<unknown>((x) => x !== undefined, "must be a JSON value (null when empty)"),
  /** Free-form JSON object; keys a reader does not know are kept. */
  // not v.record: it turns an array into {} before any check could see it
  metadata: v.custom<Record<string, unknown>>((m) => typeof m === "object" && m !== null && !Array.isArray(m), "must be a JSON object"),
  /** SHA-256 (hex) of the RFC 8785 canonical JSON of every other field, known or not. */
  envelope_hash: hex(64),
});

export type Envelope = v.InferOutput<typeof EnvelopeSchema>;

/** What a writer supplies; createEnvelope fills in the rest. */
export type EnvelopeFields = {
  type: string;
  from: string;
  payload: unknown;
  to?: string | null;
  correlation_id?: string;
  causation_id?: string | null;
  trace_id?: string | null;
  span_id?: string | null;
  cost?: { credits: number } | null;
  metadata?: Record<string, unknown>;
  id?: string;
  timestamp?: string | Date;
};

export type EnvelopeResult = { ok: true; envelope: Envelope } | { ok: false; issues: string[] };
export type EnvelopeCheck = { ok: true; hash: string } | { ok: false; expected: string; actual: unknown };

/**
 * The envelope's hash: SHA-256 (lowercase hex) over the UTF-8 of the RFC 8785 canonical JSON of
 * the envelope without `envelope_hash`. Throws HOST_ERR_ENVELOPE for values JSON cannot carry.
 */
export function envelopeHash(envelope: { readonly [key: string]: unknown }): string {
  const { envelope_hash: _ignored, ...rest } = envelope;
  return sha256Hex(canonicalJson(rest));
}

/** A new event: id (a nuid), timestamp (now), version and hash filled in; validated. */
export function createEnvelope(fields: EnvelopeFields): Envelope {
  const id = fields.id ?? nuid.next();
  const ts = fields.timestamp ?? new Date();
  return sealEnvelope({
    version: ENVELOPE_VERSION,
    id,
    type: fields.type,
    from: fields.from,
    to: fields.to ?? null,
    correlation_id: fields.correlation_id ?? id,
    causation_id: fields.causation_id ?? null,
    trace_id: fields.trace_id ?? null,
    span_id: fields.span_id ?? null,
    timestamp: typeof ts === "string" ? ts : ts.toISOString(),
    cost: fields.cost ?? null,
    payload: fields.payload,
    metadata: fields.metadata ?? {},
  });
}

/**
 * Validates every field but the hash and sets `envelope_hash`. For writers that build the object
 * themselves (a newer minor version with extra fields); a forwarder must not re-seal, it passes
 * the envelope on untouched.
 */
export function sealEnvelope(fields: { readonly [key: string]: unknown }): Envelope {
  const { envelope_hash: _ignored, ...rest } = fields;
  const hash = envelopeHash(rest); // first: it names a non-JSON value's path precisely
  const checked = safeParseEnvelope({ ...rest, envelope_hash: hash });
  if (!checked.ok) throw new HostError(ErrorCode.Envelope, `invalid envelope: ${checked.issues.join("; ")}`);
  return checked.envelope;
}

/** Recomputes the hash. `expected` is the recomputed hash, `actual` the one the envelope carries. */
export function verifyEnvelope(envelope: { readonly [key: string]: unknown }): EnvelopeCheck {
  const expected = envelopeHash(envelope);
  return envelope.envelope_hash === expected ? { ok: true, hash: expected } : { ok: false, expected, actual: envelope.envelope_hash };
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes (bytes are UTF-8 JSON) and validates an envelope; issues read `path: message`. It does
 * not check the hash: that is verifyEnvelope.
 */
export function safeParseEnvelope(input: Uint8Array | unknown): EnvelopeResult {
  let value = input;
  if (input instanceof Uint8Array) {
    try {
      value = JSON.parse(decoder.decode(input));
    } catch (err) {
      return { ok: false, issues: [`(root): not UTF-8 JSON (${(err as Error).message})`] };
    }
  }
  const result = v.safeParse(EnvelopeSchema, value);
  if (!result.success) return { ok: false, issues: result.issues.map((i) => `${v.getDotPath(i) ?? "(root)"}: ${i.message}`) };
  const why = nonJsonReason(value);
  if (why) return { ok: false, issues: [why] };
  // the input itself, not valibot's copy: the copy leaves out keys such as `constructor` and
  // `__proto__`, and every key must survive for the hash to verify
  return { ok: true, envelope: value as Envelope };
}

/** Like safeParseEnvelope, but throws HOST_ERR_ENVELOPE listing the issues. */
export function parseEnvelope(input: Uint8Array | unknown): Envelope {
  const r = safeParseEnvelope(input);
  if (!r.ok) throw new HostError(ErrorCode.Envelope, `invalid envelope: ${r.issues.join("; ")}`);
  return r.envelope;
}
