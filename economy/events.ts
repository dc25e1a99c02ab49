import { createHash } from "node:crypto";
import * as v from "valibot";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import type { FunctionContext } from "syntropism";
import { createEnvelope, type Envelope } from "../host/envelope.ts";
import { Header } from "../host/headers.ts";
import { EconomyError, EconomyErrorCode } from "./errors.ts";
import type { Db, Sql } from "./db.ts";
import { EVENTS, type EventPayload, type EventType } from "./catalogue.ts";

// Events go through an outbox: recorded in the transaction that makes the change, published to the
// audit stream after commit, marked published. Event ids derive from the command's msg id, so a
// redelivered command re-publishes the same ids and JetStream keeps one copy of each.
//
// Two ways out of the outbox: the fast path (the message that wrote the events publishes them right
// after commit: publishRecorded, flushEvents) and the relay (relayOutbox, run every 500 ms by the
// economy/relayOutbox schedule), which publishes whatever has stayed unpublished for a second or
// more — the events of a message whose worker died after commit, or whose publish failed and was
// never redelivered. Publishing is at least once: an event may reach the stream twice (both paths,
// or a crash between publish and mark); the stream drops a repeat of a msg id within its duplicate
// window, and readers skip an event id they have already seen (docs/economy.md, "Guarantees").

/** What caused the events: the command (or tick) being handled. */
export type Cause = {
  sourceMsgId: string;
  correlationId: string;
  causationId: string;
  traceId?: string;
  spanId?: string;
  /** Who states the facts (a function id). */
  from: string;
};

/** `correlationId` overrides the cause's: a clearing states facts about bids of many conversations. */
export type EventInput = { [T in EventType]: { type: T; payload: EventPayload<T>; to?: string | null; correlationId?: string | null } }[EventType];

function eventId(sourceMsgId: string, type: string, n: number): string {
  // ids travel as Nats-Msg-Id: visible ASCII, bounded length
  const base = /^[\x21-\x7e]{1,180}$/.test(sourceMsgId) ? sourceMsgId : `h${createHash("sha256").update(sourceMsgId).digest("hex").slice(0, 40)}`;
  return `${base}:${type}:${n}`;
}

/** Records events in the caller's transaction; returns their envelopes. */
export async function recordEvents(tx: Db, cause: Cause, events: EventInput[]): Promise<Envelope[]> {
  return recordCaused(tx, events.map((event) => ({ cause, event })));
}

/** Records events of several causes (a group of commands) with one insert. */
export async function recordCaused(tx: Db, items: { cause: Cause; event: EventInput }[], sink?: Recorded[]): Promise<Envelope[]> {
  const envelopes: Envelope[] = [];
  const rows: { id: string; src: string; subject: string; env: string }[] = [];
  const counts = new Map<string, number>();
  for (const { cause, event: e } of items) {
    const def = EVENTS[e.type];
    const parsed = v.safeParse(def.schema, e.payload);
    if (!parsed.success) throw new EconomyError(EconomyErrorCode.InvalidEvent, `event ${e.type} does not match the catalogue: ${parsed.issues.map((i) => `${v.getDotPath(i) ?? ""}: ${i.message}`).join("; ")}`);
    const key = `${cause.sourceMsgId}\u0000${e.type}`;
    const n = counts.get(key) ?? 0;
    counts.set(key, n + 1);
    const env = createEnvelope({
      id: eventId(cause.sourceMsgId, e.type, n),
      type: e.type,
      from: cause.from,
      to: e.to ?? null,
      correlation_id: e.correlationId || cause.correlationId,
      causation_id: cause.causationId,
      trace_id: cause.traceId ?? null,
      span_id: cause.spanId ?? null,
      payload: parsed.output,
      metadata: { source_msg_id: cause.sourceMsgId },
    });
    envelopes.push(env);
    rows.push({ id: env.id, src: cause.sourceMsgId, subject: def.subject, env: JSON.stringify(env) });
    sink?.push({ id: env.id, subject: def.subject, envelope: env, sourceMsgId: cause.sourceMsgId });
  }
  if (rows.length) {
    await tx`INSERT INTO outbox (event_id, source_msg_id, subject, envelope)
             SELECT id, src, subject, env::jsonb
               FROM unnest(${rows.map((r) => r.id)}::text[], ${rows.map((r) => r.src)}::text[], ${rows.map((r) => r.subject)}::text[], ${rows.map((r) => r.env)}::text[]) AS t(id, src, subject, env)
             ON CONFLICT (event_id) DO NOTHING`;
  }
  return envelopes;
}

/** An event recorded in the outbox, ready to publish after commit. */
export type Recorded = { id: string; subject: string; envelope: Envelope; sourceMsgId: string };

/**
 * Publishes events just recorded (after their transaction committed) from memory and marks them;
 * if this fails, the redelivered command publishes them from the outbox (flushEvents).
 */
export async function publishRecorded(publish: EventPublisher, sql: Sql, recorded: Recorded[]): Promise<void> {
  if (!recorded.length) return;
  await Promise.all(recorded.map((r) => publish(r.subject, r.envelope, r.id)));
  await markPublished(sql, recorded.map((r) => r.id));
}

/** Marks events published (those not marked yet: a relay may have been first). */
export async function markPublished(sql: Sql, eventIds: string[]): Promise<void> {
  await sql`UPDATE outbox SET published_at = now() WHERE event_id = ANY(${eventIds}::text[]) AND published_at IS NULL`;
}

/** Publishes the unpublished events of one or more commands, in order, and marks them. */
export async function flushEvents(publish: EventPublisher, sql: Sql, sourceMsgId: string | string[]): Promise<number> {
  const ids = Array.isArray(sourceMsgId) ? sourceMsgId : [sourceMsgId];
  const rows = await sql<{ seq: bigint; event_id: string; subject: string; envelope: Envelope }[]>`
    SELECT seq, event_id, subject, envelope FROM outbox
     WHERE source_msg_id = ANY(${ids}::text[]) AND published_at IS NULL ORDER BY seq`;
  if (!rows.length) return 0;
  // pipelined: JetStream keeps them in publish order on one connection
  await Promise.all(rows.map((r) => publish(r.subject, r.envelope, r.event_id)));
  await sql`UPDATE outbox SET published_at = now() WHERE seq = ANY(${rows.map((r) => r.seq.toString())}::bigint[])`;
  return rows.length;
}

/** Publishes one event with msg id = event id (a function passes `ctx.publish`; tests a JetStream client). */
export type EventPublisher = (subject: string, envelope: Envelope, msgId: string) => Promise<Pick<PubAck, "duplicate">>;

export type RelayOptions = {
  /** Only events recorded at least this long ago (default 1000 ms): younger ones are the fast path's. */
  minAgeMs?: number;
  /** Events per transaction (default 500). */
  batch?: number;
  /** Stop taking new batches after this long (default 2000 ms); the next run goes on. */
  budgetMs?: number;
};

export type RelayResult = {
  /** Events published and marked. */
  published: number;
  /** Of those, how many the stream already had (the fast path was there first). */
  duplicates: number;
  /** True when another relay held the outbox and this one did nothing. */
  busy: boolean;
};

export const RELAY_EVERY_MS = 500;
export const RELAY_MIN_AGE_MS = 1000;
const RELAY_LOCK = 0x6f75_7462_6f78_7265n; // "outboxre"

/**
 * The outbox relay: takes the events left unpublished for `minAgeMs` or more, oldest first, and
 * publishes each (msg id = event id) in outbox order, then marks them — batch by batch, one
 * transaction each. One relay runs at a time across workers (an advisory lock; another run returns
 * `busy`), so events leave in sequence order; rows the fast path is marking at that moment are
 * skipped (FOR UPDATE SKIP LOCKED), not waited for. A publish that fails rolls the batch back:
 * the next run publishes it again, and the duplicate window and readers' dedupe absorb the repeats.
 */
export async function relayOutbox(sql: Sql, publish: EventPublisher, options: RelayOptions = {}): Promise<RelayResult> {
  const minAgeMs = options.minAgeMs ?? RELAY_MIN_AGE_MS;
  const batch = options.batch ?? 500;
  const deadline = performance.now() + (options.budgetMs ?? 2000);
  const result: RelayResult = { published: 0, duplicates: 0, busy: false };
  for (;;) {
    const n = await sql.begin(async (tx) => {
      const [lock] = await tx<{ ok: boolean }[]>`SELECT pg_try_advisory_xact_lock(${RELAY_LOCK.toString()}::bigint) AS ok`;
      if (!lock!.ok) return -1;
      const rows = await tx<{ seq: bigint; event_id: string; subject: string; envelope: Envelope }[]>`
        SELECT seq, event_id, subject, envelope FROM outbox
         WHERE published_at IS NULL AND created_at <= now() - make_interval(secs => ${minAgeMs / 1000})
         ORDER BY seq LIMIT ${batch} FOR UPDATE SKIP LOCKED`;
      // one at a time: the stream keeps them in outbox order
      for (const r of rows) if ((await publish(r.subject, r.envelope, r.event_id)).duplicate) result.duplicates++;
      if (rows.length) await tx`UPDATE outbox SET published_at = now() WHERE seq = ANY(${rows.map((r) => r.seq.toString())}::bigint[])`;
      return rows.length;
    });
    if (n < 0) result.busy = true;
    else result.published += n;
    if (n < batch || performance.now() >= deadline) return result;
  }
}

/**
 * Events through a function's publish path (ctx.publish: backpressure, the typed full-stream
 * deferral, trace context), msg id = event id, with headers naming the event's own conversation —
 * a clearing or the relay states facts about messages of many — and who states it.
 */
export function contextPublisher(ctx: Pick<FunctionContext, "publish" | "fn" | "msgId" | "headers">): EventPublisher {
  // ctx.publish names the handled message's conversation already (its correlation, itself as
  // cause, the function as sender): only an event that says otherwise needs headers of its own
  const correlation = ctx.headers[Header.CorrelationId] ?? ctx.msgId;
  return (subject, envelope, msgId) => {
    const headers: Record<string, string> = {};
    if (envelope.from !== ctx.fn) headers[Header.Sender] = envelope.from;
    if (envelope.correlation_id && envelope.correlation_id !== correlation) headers[Header.CorrelationId] = envelope.correlation_id;
    if (envelope.causation_id && envelope.causation_id !== ctx.msgId) headers[Header.CausationId] = envelope.causation_id;
    return ctx.publish(subject, envelope, { msgId, headers });
  };
}

/** A publisher on a JetStream client (tools and tests; functions use contextPublisher). */
export function jetStreamPublisher(js: JetStreamClient): EventPublisher {
  return (subject, envelope, msgId) => js.publish(subject, JSON.stringify(envelope), { msgID: msgId });
}
