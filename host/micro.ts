import { nuid, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import type { ResolvedFunction } from "./resolved.ts";

// The NATS service discovery protocol ($SRV.PING|INFO|STATS, schema io.nats.micro.v1), so that
// `nats micro ls|info|stats` list the functions of every running worker. It is answered here
// rather than through @nats-io/services because JetStream-triggered functions have no core
// subscription for that library to wrap, yet they should be listed and counted all the same.

export type MicroOptions = {
  name: string;
  version: string;
  description?: string;
  metadata?: Record<string, string>;
  functions: () => ResolvedFunction[];
};

function endpointOf(fn: ResolvedFunction) {
  const t = fn.trigger;
  return {
    name: fn.consumer,
    subject: t.type === "schedule" ? `schedule.${fn.consumer}` : t.subject,
    queue_group: t.type === "request" ? (t.queue ?? fn.consumer) : fn.consumer,
    metadata: {
      function: fn.id,
      trigger: t.type,
      ...(t.type === "jetstream" ? { stream: t.stream, consumer: fn.consumer } : {}),
      ...(t.type === "schedule" ? { every_ms: String(t.everyMs) } : {}),
      ...(fn.def.description ? { description: fn.def.description } : {}),
    },
  };
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;

export function statsOf(fn: ResolvedFunction) {
  const s = fn.stats;
  const done = s.succeeded + s.failed;
  return {
    ...endpointOf(fn),
    num_requests: s.received,
    num_errors: s.failed,
    last_error: s.lastError,
    processing_time: Number(s.processingNs),
    average_processing_time: done > 0 ? Math.round(Number(s.processingNs) / done) : 0,
    data: {
      succeeded: s.succeeded,
      dead_lettered: s.deadLettered,
      deferred: s.deferred,
      p50_ms: round(s.recent.percentile(50)),
      p99_ms: round(s.recent.percentile(99)),
      started: s.startedAt,
      loop: s.loop.state,
      ...(s.loop.state !== "running" ? { loop_since: s.loop.since } : {}),
      ...(s.loop.error ? { loop_error: s.loop.error } : {}),
      loop_recoveries: s.loop.recoveries,
    },
  };
}

export class MicroResponder {
  readonly id = nuid.next();
  readonly started = new Date().toISOString();
  readonly #nc: NatsConnection;
  readonly #opts: MicroOptions;
  readonly #subs: Subscription[] = [];

  constructor(nc: NatsConnection, opts: MicroOptions) {
    this.#nc = nc;
    this.#opts = opts;
  }

  start(): void {
    const { name } = this.#opts;
    const base = () => ({ name, id: this.id, version: this.#opts.version, metadata: this.#opts.metadata ?? {} });
    const answers: Record<string, () => unknown> = {
      PING: () => ({ type: "io.nats.micro.v1.ping_response", ...base() }),
      INFO: () => ({
        type: "io.nats.micro.v1.info_response",
        ...base(),
        description: this.#opts.description ?? "",
        endpoints: this.#opts.functions().map(endpointOf),
      }),
      STATS: () => ({
        type: "io.nats.micro.v1.stats_response",
        ...base(),
        started: this.started,
        endpoints: this.#opts.functions().map(statsOf),
      }),
    };
    for (const [verb, answer] of Object.entries(answers)) {
      for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.${name}`, `$SRV.${verb}.${name}.${this.id}`]) {
        this.#subs.push(
          this.#nc.subscribe(subject, {
            callback: (err, msg) => {
              if (!err) msg.respond(JSON.stringify(answer()));
            },
          }),
        );
      }
    }
  }

  stop(): void {
    for (const s of this.#subs.splice(0)) s.unsubscribe();
  }
}
