import type * as v from "valibot";
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { Logger } from "./log.ts";
import type { Span } from "@opentelemetry/api";
import type { Resource, ResourceContext, ResourceValues } from "./resource.ts";

/** Durable work: one durable pull consumer per function on `stream`, filtered by `subject`. */
export type JetStreamTrigger = {
  type: "jetstream";
  stream: string;
  subject: string;
};

/** Fast synchronous queries: core NATS request-reply in a queue group. */
export type RequestTrigger = {
  type: "request";
  subject: string;
  /** Queue group; defaults to the function id so every worker shares the load. */
  queue?: string;
};

/**
 * Runs on every `everyMs` boundary of the wall clock, on every worker; the handler gets
 * `{ tick, scheduledAt, everyMs }`. What it publishes is de-duplicated across workers (the msg ids
 * derive from the tick), so publishing `tick` for a window yields exactly one message.
 */
export type ScheduleTrigger = {
  type: "schedule";
  everyMs: number;
};

export type Trigger = JetStreamTrigger | RequestTrigger | ScheduleTrigger;

export type Backoff = {
  /** Delay before the second attempt. Default 1000 ms. */
  initialMs?: number;
  /** Upper bound of any delay. Default 60000 ms. */
  maxMs?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Fraction of the delay randomised (±). Default 0.2. */
  jitter?: number;
};

export type RateLimit<P> = {
  /** Messages allowed per `periodMs` for one key. */
  limit: number;
  periodMs: number;
  /** The key the limit is counted under, e.g. `(p) => p.agent_id`. Default: one key for the function. */
  key?: (payload: P, ctx: MessageInfo) => string;
};

export type PublishOptions = {
  /** `Nats-Msg-Id`; derived from the causing message when omitted. */
  msgId?: string;
  headers?: Record<string, string>;
};

export type MessageInfo = {
  /** Function id, e.g. `market/placeBid`. */
  fn: string;
  subject: string;
  /** Header values by name (first value of each). */
  headers: Readonly<Record<string, string>>;
  /** The message's `Nats-Msg-Id`, or `stream:seq` for JetStream messages published without one. */
  msgId: string;
  /** JetStream only. */
  stream?: string;
  seq?: number;
  /** 1-based attempt number, not counting deliveries deferred by rate limits or backpressure. */
  attempt: number;
  /** The server's raw delivery count (JetStream only; 1 for requests). */
  deliveryCount: number;
};

export type FunctionContext<Res = Record<string, unknown>> = MessageInfo & {
  /** The function's resources: the shared ones it names and what its own `setup` returned. */
  resources: Res;
  /** Aborted when the function's timeout passes or the host shuts down past its grace period. */
  signal: AbortSignal;
  /** Bound to the function, stream sequence, msg id, correlation id and trace ids of this message. */
  log: Logger;
  /** This delivery's span (OpenTelemetry); handlers may add attributes or events. */
  span: Span;
  nc: NatsConnection;
  js: JetStreamClient;
  /** Opens (and caches) a KV bucket declared in streams.config.ts. */
  kv(bucket: string): Promise<KV>;
  /**
   * Publishes JSON to JetStream with `Nats-Msg-Id` set (given or derived from this message, so a
   * retried handler never emits twice) and backpressure applied.
   */
  publish(subject: string, data: unknown, opts?: PublishOptions): Promise<PubAck>;
  /** Core NATS publish of JSON (not persisted, not deduplicated). */
  broadcast(subject: string, data: unknown, opts?: { headers?: Record<string, string> }): void;
  /** Core NATS request with a JSON body; resolves the decoded JSON reply. */
  request<T = unknown>(subject: string, data: unknown, opts?: { timeoutMs?: number }): Promise<T>;
  /** Extends the JetStream lease. The host already does this while a handler runs. */
  working(): void;
};

export type Handler<P, R, Res = Record<string, unknown>> = (payload: P, ctx: FunctionContext<Res>) => R | Promise<R>;

/** Shared resources by the key a handler finds them under in `ctx.resources`. */
export type ResourceMap = Record<string, Resource<any>>;

export type FunctionOptions<S extends v.GenericSchema | undefined, R, U extends ResourceMap = {}, L extends object = {}> = {
  /**
   * What runs the function. A function of the host's settings (HostOptions.settings) when it
   * depends on configuration, e.g. a schedule's period: `(s) => ({ type: "schedule", everyMs: … })`.
   */
  trigger: Trigger | ((settings: Readonly<Record<string, unknown>>) => Trigger);
  /** Validates the decoded JSON before the handler runs. An empty body decodes to `undefined`. */
  schema?: S;
  /**
   * Shared resources (defineResource) the handler uses, by key: set up once per host before the
   * function starts, released when the host stops (host/resource.ts).
   */
  resources?: U;
  /**
   * The function's own resources, set up when it starts (after the shared ones, which it gets in
   * `ctx.resources`); what it returns joins `ctx.resources`. Released by `release` when the
   * function stops: the host stops, or `host dev` reloads or removes the file.
   */
  setup?: (ctx: ResourceContext & { resources: ResourceValues<U> }) => L | Promise<L>;
  release?: (local: L) => void | Promise<void>;
  handler: Handler<S extends v.GenericSchema ? v.InferOutput<S> : unknown, R, ResourceValues<U> & L>;
  description?: string;
  /** Handlers running at once in one worker. Default 8. */
  concurrency?: number;
  /**
   * Messages one worker holds at once — pulled and waiting for a slot, or running; all are leased.
   * Larger batches pull more cheaply; smaller ones share work more evenly between workers.
   * Default 64 (never less than `concurrency`).
   */
  prefetch?: number;
  /** Per-attempt deadline; the handler's signal is aborted when it passes. Default 30000 ms. */
  timeoutMs?: number;
  /** Attempts before a message is dead-lettered. Default 5. */
  maxDeliver?: number;
  backoff?: Backoff;
  /** Consumer ack wait; the host calls working() while a handler runs longer. Default 30000 ms. */
  ackWaitMs?: number;
  /** Consumer max_ack_pending. Default 1000. */
  maxAckPending?: number;
  /** Largest accepted payload; larger ones are dead-lettered. Default 1 MiB. */
  maxPayloadBytes?: number;
  /** Wait for the server to confirm the ack before counting the message done. Default false. */
  doubleAck?: boolean;
  rateLimit?: RateLimit<S extends v.GenericSchema ? v.InferOutput<S> : unknown>;
  /**
   * A key whose completion is recorded in KV: a redelivery of a message whose handler already
   * completed (but whose ack was lost) is acknowledged without running the handler again.
   */
  idempotencyKey?: (payload: S extends v.GenericSchema ? v.InferOutput<S> : unknown, ctx: MessageInfo) => string | undefined;
};

const FUNCTION_MARK = Symbol.for("syntropism.function");

export type FunctionDefinition = FunctionOptions<v.GenericSchema | undefined, unknown, ResourceMap, object> & {
  readonly [FUNCTION_MARK]: true;
};

/** Declares a function. A file in functions/ exports one as its default export. */
export function defineFunction<S extends v.GenericSchema | undefined = undefined, R = unknown, U extends ResourceMap = {}, L extends object = {}>(
  options: FunctionOptions<S, R, U, L>,
): FunctionDefinition {
  return Object.freeze({ ...options, [FUNCTION_MARK]: true as const }) as unknown as FunctionDefinition;
}

export function isFunctionDefinition(value: unknown): value is FunctionDefinition {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[FUNCTION_MARK] === true;
}
