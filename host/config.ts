import * as v from "valibot";
import { ErrorCode, HostError, type ErrorClassifier } from "./errors.ts";

// streams.config.ts declares every stream, consumer default and KV bucket. The host adds its own
// resources (the dead-letter stream and two KV buckets) so `host streams plan` shows them as well.

const positive = v.pipe(v.number(), v.integer(), v.minValue(1));
const nonNegative = v.pipe(v.number(), v.integer(), v.minValue(0));
const name = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+$/, "may contain only letters, digits, _ and -"));

const StreamSpecSchema = v.strictObject({
  name,
  subjects: v.pipe(v.array(v.pipe(v.string(), v.minLength(1))), v.minLength(1)),
  description: v.optional(v.string()),
  retention: v.optional(v.picklist(["limits", "workqueue", "interest"]), "limits"),
  storage: v.optional(v.picklist(["file", "memory"]), "file"),
  /** Hard limits; -1 is unlimited. A work queue should always have one (backpressure reads it). */
  maxMsgs: v.optional(v.union([positive, v.literal(-1)]), -1),
  maxBytes: v.optional(v.union([positive, v.literal(-1)]), -1),
  maxAgeMs: v.optional(nonNegative, 0),
  maxMsgSize: v.optional(v.union([positive, v.literal(-1)]), -1),
  discard: v.optional(v.picklist(["old", "new"]), "new"),
  duplicateWindowMs: v.optional(positive, 120_000),
  replicas: v.optional(positive, 1),
});

const KvSpecSchema = v.strictObject({
  bucket: name,
  description: v.optional(v.string()),
  history: v.optional(v.pipe(positive, v.maxValue(64)), 1),
  ttlMs: v.optional(nonNegative, 0),
  maxBytes: v.optional(v.union([positive, v.literal(-1)]), -1),
  storage: v.optional(v.picklist(["file", "memory"]), "file"),
  replicas: v.optional(positive, 1),
});

const ConsumerDefaultsSchema = v.strictObject({
  ackWaitMs: v.optional(positive, 30_000),
  maxAckPending: v.optional(positive, 1000),
  concurrency: v.optional(positive, 8),
  prefetch: v.optional(positive, 64),
  timeoutMs: v.optional(positive, 30_000),
  maxDeliver: v.optional(positive, 5),
  maxPayloadBytes: v.optional(positive, 1024 * 1024),
  backoff: v.optional(
    v.strictObject({
      initialMs: v.optional(nonNegative, 1000),
      maxMs: v.optional(nonNegative, 60_000),
      factor: v.optional(v.pipe(v.number(), v.minValue(1)), 2),
      jitter: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(1)), 0.2),
    }),
    {},
  ),
});

const HostConfigSchema = v.strictObject({
  /** Service name announced on $SRV.* (`nats micro ls`). */
  service: v.optional(
    v.strictObject({
      name: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+$/)), "syntropism"),
      version: v.optional(v.string(), "0.1.0"),
    }),
    {},
  ),
  streams: v.optional(v.array(StreamSpecSchema), []),
  kv: v.optional(v.array(KvSpecSchema), []),
  consumerDefaults: v.optional(ConsumerDefaultsSchema, {}),
  deadLetter: v.optional(
    v.strictObject({
      stream: v.optional(name, "DEAD_LETTERS"),
      subjectPrefix: v.optional(v.string(), "dlq"),
      maxAgeMs: v.optional(nonNegative, 30 * 24 * 3600 * 1000),
      maxMsgs: v.optional(v.union([positive, v.literal(-1)]), 1_000_000),
      maxBytes: v.optional(v.union([positive, v.literal(-1)]), 4 * 1024 * 1024 * 1024),
    }),
    {},
  ),
  backpressure: v.optional(
    v.strictObject({
      /** Fill ratio of a stream's hard limit above which the host slows down. */
      highWater: v.optional(v.pipe(v.number(), v.minValue(0.1), v.maxValue(1)), 0.8),
      /** How long a stream's depth reading is reused. */
      cacheMs: v.optional(positive, 250),
      /** Delay a publish or pull waits while a stream is above high water. */
      pauseMs: v.optional(positive, 200),
    }),
    {},
  ),
  /**
   * Classifies errors thrown by any function's handler once, for every function: non-retriable
   * (dead-lettered at once), retriable (counted against maxDeliver) or transient (retried without
   * spending attempts). See ErrorClass in host/errors.ts.
   */
  classifyError: v.optional(v.custom<ErrorClassifier>((f) => typeof f === "function", "must be a function (err) => class")),
  /** How long completion records (idempotency keys) and deferral counts are kept. */
  idempotencyTtlMs: v.optional(positive, 24 * 3600 * 1000),
});

export type StreamSpecInput = v.InferInput<typeof StreamSpecSchema>;
export type StreamSpec = v.InferOutput<typeof StreamSpecSchema>;
export type KvSpecInput = v.InferInput<typeof KvSpecSchema>;
export type KvSpec = v.InferOutput<typeof KvSpecSchema>;
export type HostConfigInput = v.InferInput<typeof HostConfigSchema>;
export type HostConfig = v.InferOutput<typeof HostConfigSchema>;
export type ConsumerDefaults = HostConfig["consumerDefaults"];

/** Typed identity for streams.config.ts. */
export function defineConfig(config: HostConfigInput): HostConfigInput {
  return config;
}

export function parseConfig(input: unknown, source = "streams.config.ts"): HostConfig {
  const result = v.safeParse(HostConfigSchema, input ?? {});
  if (!result.success) {
    const issues = result.issues.map((i) => `${v.getDotPath(i) ?? "(root)"}: ${i.message}`).join("; ");
    throw new HostError(ErrorCode.Config, `${source} is invalid: ${issues}`);
  }
  const config = result.output;
  const names = new Set<string>();
  for (const s of config.streams) {
    if (names.has(s.name)) throw new HostError(ErrorCode.Config, `${source}: stream ${s.name} is declared twice`);
    names.add(s.name);
  }
  return config;
}

/** Buckets the host itself uses. */
export const HOST_BUCKETS = {
  rateLimit: "host_ratelimit",
  runs: "host_runs",
} as const;

/** The config's streams and buckets plus the host's own (dead letters, rate limits, run records). */
export function allResources(config: HostConfig): { streams: StreamSpec[]; kv: KvSpec[] } {
  const dl = config.deadLetter;
  const deadLetters: StreamSpec = {
    name: dl.stream,
    subjects: [`${dl.subjectPrefix}.>`],
    description: "Dead letters: messages a function gave up on, with the reason in headers",
    retention: "limits",
    storage: "file",
    maxMsgs: dl.maxMsgs,
    maxBytes: dl.maxBytes,
    maxAgeMs: dl.maxAgeMs,
    maxMsgSize: -1,
    discard: "old",
    duplicateWindowMs: 120_000,
    replicas: 1,
  };
  const hostKv: KvSpec[] = [
    {
      bucket: HOST_BUCKETS.rateLimit,
      description: "Rate-limit state shared by every worker",
      history: 1,
      ttlMs: 3600_000,
      maxBytes: -1,
      storage: "file",
      replicas: 1,
    },
    {
      bucket: HOST_BUCKETS.runs,
      description: "Completed idempotency keys and deferral counts",
      history: 1,
      ttlMs: config.idempotencyTtlMs,
      maxBytes: -1,
      storage: "file",
      replicas: 1,
    },
  ];
  const streams = config.streams.some((s) => s.name === dl.stream) ? config.streams : [...config.streams, deadLetters];
  return { streams, kv: [...config.kv, ...hostKv.filter((k) => !config.kv.some((c) => c.bucket === k.bucket))] };
}
