import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import { allResources, type HostConfig, type KvSpec, type StreamSpec } from "./config.ts";
import { ErrorCode, HostError } from "./errors.ts";

// `host streams plan` compares the declared streams and buckets with the server; `apply` makes the
// server match, idempotently. Only declared fields are compared, so settings the server fills in
// (or an operator tuned by hand and did not declare) are left alone.

export type FieldChange = { field: string; server: unknown; declared: unknown; mutable: boolean };

export type PlanItem =
  | { kind: "stream" | "kv"; name: string; action: "create"; spec: StreamSpec | KvSpec }
  | { kind: "stream" | "kv"; name: string; action: "update"; changes: FieldChange[]; spec: StreamSpec | KvSpec }
  | { kind: "stream" | "kv"; name: string; action: "unchanged" };

export type Plan = { items: PlanItem[]; drift: boolean };

const retentionOf = { limits: RetentionPolicy.Limits, workqueue: RetentionPolicy.Workqueue, interest: RetentionPolicy.Interest };
const storageOf = { file: StorageType.File, memory: StorageType.Memory };
const discardOf = { old: DiscardPolicy.Old, new: DiscardPolicy.New };

export function streamConfigOf(spec: StreamSpec): Partial<StreamConfig> & { name: string } {
  return {
    name: spec.name,
    subjects: spec.subjects,
    description: spec.description,
    retention: retentionOf[spec.retention],
    storage: storageOf[spec.storage],
    max_msgs: spec.maxMsgs,
    max_bytes: spec.maxBytes,
    max_age: nanos(spec.maxAgeMs),
    max_msg_size: spec.maxMsgSize,
    discard: discardOf[spec.discard],
    duplicate_window: nanos(spec.duplicateWindowMs),
    num_replicas: spec.replicas,
  };
}

const IMMUTABLE = new Set(["retention", "storage"]);

function diffStream(spec: StreamSpec, info: StreamInfo): FieldChange[] {
  const want = streamConfigOf(spec) as Record<string, unknown>;
  const have = info.config as unknown as Record<string, unknown>;
  const changes: FieldChange[] = [];
  for (const [field, declared] of Object.entries(want)) {
    if (declared === undefined || field === "name") continue;
    let server = have[field];
    if (field === "description" && server === undefined) server = undefined;
    const same =
      Array.isArray(declared) && Array.isArray(server)
        ? [...declared].sort().join("\n") === [...server].sort().join("\n")
        : declared === server;
    if (!same) changes.push({ field, server, declared, mutable: !IMMUTABLE.has(field) });
  }
  return changes;
}

function kvAsStream(spec: KvSpec): StreamSpec {
  return {
    name: `KV_${spec.bucket}`,
    subjects: [`$KV.${spec.bucket}.>`],
    description: spec.description,
    retention: "limits",
    storage: spec.storage,
    maxMsgs: -1,
    maxBytes: spec.maxBytes,
    maxAgeMs: spec.ttlMs,
    maxMsgSize: -1,
    discard: "new",
    duplicateWindowMs: 120_000,
    replicas: spec.replicas,
  };
}

function diffKv(spec: KvSpec, info: StreamInfo): FieldChange[] {
  const changes: FieldChange[] = [];
  const c = info.config;
  const cmp = (field: string, server: unknown, declared: unknown, mutable = true) => {
    if (server !== declared) changes.push({ field, server, declared, mutable });
  };
  cmp("history", c.max_msgs_per_subject, spec.history);
  cmp("ttlMs", Math.round((c.max_age ?? 0) / 1e6), spec.ttlMs);
  cmp("maxBytes", c.max_bytes, spec.maxBytes);
  cmp("storage", c.storage, storageOf[spec.storage], false);
  cmp("replicas", c.num_replicas, spec.replicas);
  return changes;
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw err;
  }
}

export async function planStreams(jsm: JetStreamManager, config: HostConfig): Promise<Plan> {
  const { streams, kv } = allResources(config);
  const items: PlanItem[] = [];
  for (const spec of streams) {
    const info = await streamInfo(jsm, spec.name);
    if (!info) items.push({ kind: "stream", name: spec.name, action: "create", spec });
    else {
      const changes = diffStream(spec, info);
      items.push(changes.length ? { kind: "stream", name: spec.name, action: "update", changes, spec } : { kind: "stream", name: spec.name, action: "unchanged" });
    }
  }
  for (const spec of kv) {
    const info = await streamInfo(jsm, `KV_${spec.bucket}`);
    if (!info) items.push({ kind: "kv", name: spec.bucket, action: "create", spec });
    else {
      const changes = diffKv(spec, info);
      items.push(changes.length ? { kind: "kv", name: spec.bucket, action: "update", changes, spec } : { kind: "kv", name: spec.bucket, action: "unchanged" });
    }
  }
  return { items, drift: items.some((i) => i.action !== "unchanged") };
}

export function formatPlan(plan: Plan): string {
  const lines: string[] = [];
  for (const item of plan.items) {
    const label = `${item.kind === "kv" ? "kv bucket" : "stream"} ${item.name}`;
    if (item.action === "unchanged") lines.push(`  = ${label}`);
    else if (item.action === "create") lines.push(`  + ${label} (create)`);
    else {
      lines.push(`  ~ ${label} (update)`);
      for (const ch of item.changes) {
        const note = ch.mutable ? "" : "  [cannot change in place: delete and recreate the stream]";
        lines.push(`      ${ch.field}: ${JSON.stringify(ch.server)} -> ${JSON.stringify(ch.declared)}${note}`);
      }
    }
  }
  lines.push(plan.drift ? "Drift: the server differs from streams.config.ts." : "No drift: the server matches streams.config.ts.");
  return lines.join("\n");
}

/** Makes the server match the plan. Changes the server cannot make in place stop with an error. */
export async function applyPlan(nc: NatsConnection, jsm: JetStreamManager, plan: Plan): Promise<string[]> {
  const done: string[] = [];
  const immutable = plan.items.flatMap((i) => (i.action === "update" ? i.changes.filter((c) => !c.mutable).map((c) => `${i.name}.${c.field}`) : []));
  if (immutable.length) {
    throw new HostError(ErrorCode.Drift, `cannot apply: ${immutable.join(", ")} cannot change in place; delete and recreate, or change streams.config.ts`);
  }
  const kvm = new Kvm(nc);
  for (const item of plan.items) {
    if (item.action === "unchanged") continue;
    if (item.kind === "stream") {
      const cfg = streamConfigOf(item.spec as StreamSpec);
      if (item.action === "create") await jsm.streams.add(cfg);
      else await jsm.streams.update(cfg.name, cfg);
      done.push(`${item.action}d stream ${item.name}`);
    } else {
      const spec = item.spec as KvSpec;
      if (item.action === "create") {
        await kvm.create(spec.bucket, {
          history: spec.history,
          ttl: spec.ttlMs,
          max_bytes: spec.maxBytes,
          storage: storageOf[spec.storage],
          replicas: spec.replicas,
          description: spec.description,
        });
      } else {
        const s = kvAsStream(spec);
        await jsm.streams.update(s.name, {
          max_msgs_per_subject: spec.history,
          max_age: nanos(spec.ttlMs),
          max_bytes: spec.maxBytes,
          num_replicas: spec.replicas,
        });
      }
      done.push(`${item.action}d kv bucket ${item.name}`);
    }
  }
  return done;
}
