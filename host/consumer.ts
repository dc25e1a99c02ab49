import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type ConsumerConfig,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { ErrorCode, HostError } from "./errors.ts";
import type { ResolvedFunction } from "./resolved.ts";

// A JetStream function's durable consumer, made from its definition: created at start-up, and
// again by the trigger's loop when someone deleted it (or its stream) while the host ran.

export function consumerConfigOf(fn: ResolvedFunction): Partial<ConsumerConfig> & { durable_name: string } {
  return {
    durable_name: fn.consumer,
    description: `syntropism function ${fn.id}`,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: (fn.trigger as { subject: string }).subject,
    ack_wait: nanos(fn.ackWaitMs),
    // the host counts attempts itself (deferrals do not count), so the server never gives up
    max_deliver: -1,
    max_ack_pending: fn.maxAckPending,
  };
}

/** Creates the function's durable consumer, or updates it when its settings changed. */
export async function ensureConsumer(jsm: JetStreamManager, fn: ResolvedFunction): Promise<void> {
  const stream = (fn.trigger as { stream: string }).stream;
  const want = consumerConfigOf(fn);
  let existing;
  try {
    existing = await jsm.consumers.info(stream, fn.consumer);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) {
        throw new HostError(ErrorCode.Config, `${fn.file}: stream ${stream} does not exist; declare it in streams.config.ts`, { cause: err });
      }
      throw err;
    }
  }
  if (!existing) {
    await jsm.consumers.add(stream, want);
    return;
  }
  const c = existing.config;
  if (c.filter_subject !== want.filter_subject) {
    throw new HostError(
      ErrorCode.Drift,
      `${fn.file}: consumer ${fn.consumer} filters ${c.filter_subject ?? "(none)"} but the function wants ${want.filter_subject}; delete the consumer (nats consumer rm ${stream} ${fn.consumer}) to recreate it`,
    );
  }
  if (c.ack_wait !== want.ack_wait || c.max_deliver !== want.max_deliver || c.max_ack_pending !== want.max_ack_pending || c.description !== want.description) {
    await jsm.consumers.update(stream, fn.consumer, {
      ack_wait: want.ack_wait,
      max_deliver: want.max_deliver,
      max_ack_pending: want.max_ack_pending,
      description: want.description,
    });
  }
}
