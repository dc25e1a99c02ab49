// The public surface of the host: what a function file or streams.config.ts may import from
// "syntropism". Everything else under host/ is internal.

export { defineFunction } from "./define.ts";
export type {
  Backoff,
  FunctionContext,
  FunctionDefinition,
  FunctionOptions,
  Handler,
  JetStreamTrigger,
  MessageInfo,
  PublishOptions,
  RateLimit,
  RequestTrigger,
  ScheduleTrigger,
  Trigger,
} from "./define.ts";
export { defineResource } from "./resource.ts";
export type { Resource, ResourceContext, ResourceOptions, ResourceValue, ResourceValues } from "./resource.ts";
export { defineConfig } from "./config.ts";
export type { HostConfigInput as HostConfig, KvSpecInput as KvSpec, StreamSpecInput as StreamSpec } from "./config.ts";
export { CodedError, ErrorCode, HostError, NonRetriableError, RetryAfterError, StreamFullError } from "./errors.ts";
export type { SerializedError } from "./errors.ts";
export { Header } from "./headers.ts";
export type { Logger } from "./log.ts";
export { createEnvelope, ENVELOPE_VERSION, EnvelopeSchema, envelopeHash, parseEnvelope, safeParseEnvelope, sealEnvelope, verifyEnvelope } from "./envelope.ts";
export type { Envelope, EnvelopeCheck, EnvelopeFields, EnvelopeResult } from "./envelope.ts";
