// syntropism/host: what embedding the host takes — the Host itself, its configuration, the logger,
// local nats-servers, the multi-process supervisor. Function authors need only "syntropism".

export { Host } from "./runtime.ts";
export type { DriftPolicy, HostOptions } from "./runtime.ts";
export { defineConfig, parseConfig } from "./config.ts";
export type { HostConfig, HostConfigInput } from "./config.ts";
export { loadConfigFile } from "./configFile.ts";
export { createLogger } from "./log.ts";
export type { Logger } from "./log.ts";
export { ensureNatsServer, findNatsServer, startNatsServer } from "./natsServer.ts";
export type { NatsServerOptions, RunningNatsServer } from "./natsServer.ts";
export { Supervisor } from "./supervisor.ts";
export type { SupervisorOptions } from "./supervisor.ts";
export { installProcessPolicy } from "./processPolicy.ts";
