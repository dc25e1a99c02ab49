import { statSync } from "node:fs";
import { connect, type Authenticator, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { HOST_BUCKETS, type HostConfig } from "./config.ts";
import { Backpressure } from "./backpressure.ts";
import { ErrorCode, HostError, coerceError } from "./errors.ts";
import { JetStreamTrigger } from "./jetstreamTrigger.ts";
import { createLogger, type Logger } from "./log.ts";
import { discoverFunctions, importFunction } from "./loader.ts";
import { MicroResponder } from "./micro.ts";
import { RateLimiter } from "./rateLimit.ts";
import { RequestTrigger } from "./requestTrigger.ts";
import { ScheduleTrigger } from "./scheduleTrigger.ts";
import { TIMED_OUT, within } from "./runHandler.ts";
import { resolveFunction, type ResolvedFunction } from "./resolved.ts";
import { ensureConsumer } from "./consumer.ts";
import { RunRecords } from "./runRecords.ts";
import { featuresOf, missingFeatures, type ServerFeatures } from "./serverFeatures.ts";
import { applyPlan, formatPlan, planStreams } from "./streams.ts";
import { ensurePropagator } from "./tracing.ts";
import { ResourceScope, runRelease } from "./resource.ts";

// One host worker: a NATS connection, the functions of one folder, a trigger per function.

export type DriftPolicy = "refuse" | "apply";

export type HostOptions = {
  servers: string | string[];
  /** How the host proves who it is to a server with authentication (the service's credentials). */
  authenticator?: Authenticator;
  functionsDir: string;
  config: HostConfig;
  /** What to do when the server's streams differ from the config. Default "refuse". */
  onDrift?: DriftPolicy;
  /** How long in-flight handlers get to finish on stop. Default 10000 ms. */
  graceMs?: number;
  log?: Logger;
  name?: string;
  /**
   * Settings handed to every resource's setup (`ctx.settings`), validated by whoever starts the
   * host: the CLIs pass the project's settings (config/settings.ts). Default {}.
   */
  settings?: Readonly<Record<string, unknown>>;
  /**
   * Called when the NATS connection closes for good while the host is not stopping (it reconnects
   * forever otherwise, so this means the server refused it: credentials, a fatal protocol error).
   * A worker process exits so that its supervisor starts a fresh one.
   */
  onConnectionClosed?: (err?: Error) => void;
};

type Trigger = JetStreamTrigger | RequestTrigger | ScheduleTrigger;
type Loaded = { fn: ResolvedFunction; trigger: Trigger; mtimeMs: number; local: unknown };

export class Host {
  readonly #opts: HostOptions;
  readonly log: Logger;
  nc!: NatsConnection;
  js!: JetStreamClient;
  jsm!: JetStreamManager;
  features!: ServerFeatures;
  #kvm!: Kvm;
  #buckets = new Map<string, Promise<KV>>();
  #backpressure!: Backpressure;
  #limiter!: RateLimiter;
  #runs!: RunRecords;
  #resources!: ResourceScope;
  #micro?: MicroResponder;
  #loaded = new Map<string, Loaded>();
  #reloads = 0;
  #stopping?: Promise<void>;

  constructor(opts: HostOptions) {
    this.#opts = opts;
    this.log = opts.log ?? createLogger();
  }

  get functions(): ResolvedFunction[] {
    return [...this.#loaded.values()].map((l) => l.fn);
  }

  /** Logs the connection's losses and returns (the triggers re-bind by themselves). */
  async #watchConnection(nc: NatsConnection): Promise<void> {
    let lostAt = 0;
    for await (const s of nc.status()) {
      if (s.type === "disconnect" && !this.#stopping) {
        lostAt = Date.now();
        this.log.warn({ server: s.server }, "lost the NATS connection; reconnecting");
      } else if (s.type === "reconnect") {
        this.log.info({ server: s.server, down_ms: lostAt ? Date.now() - lostAt : undefined }, "NATS connection back");
      }
    }
  }

  async start(): Promise<void> {
    const { config } = this.#opts;
    ensurePropagator();
    // noAsyncTraces: nats.js would otherwise build two Error objects (their stacks) for every
    // request and JetStream publish, ahead of a timeout that rarely comes: ~7% of a busy worker's CPU
    this.nc = await connect({ servers: this.#opts.servers, ...(this.#opts.authenticator ? { authenticator: this.#opts.authenticator } : {}), name: this.#opts.name ?? "syntropism-host", maxReconnectAttempts: -1, reconnectTimeWait: 500, noAsyncTraces: true });
    void this.nc.closed().then((err) => {
      if (!this.#stopping) this.#opts.onConnectionClosed?.(err ?? undefined);
    });
    void this.#watchConnection(this.nc);
    this.js = jetstream(this.nc);
    this.jsm = await jetstreamManager(this.nc);
    this.features = featuresOf(this.nc.info?.version ?? "0.0.0");
    const missing = missingFeatures(this.features);
    if (missing.length) this.log.warn({ server_version: this.features.version, missing }, `nats-server ${this.features.version} lacks newer features; the host works around them`);

    const plan = await planStreams(this.jsm, config);
    if (plan.drift) {
      if ((this.#opts.onDrift ?? "refuse") === "refuse") {
        throw new HostError(ErrorCode.Drift, `the server's streams differ from streams.config.ts:\n${formatPlan(plan)}\nRun \`host streams apply\` (or start with --apply).`);
      }
      for (const line of await applyPlan(this.nc, this.jsm, plan)) this.log.info({}, line);
    }

    this.#kvm = new Kvm(this.nc);
    this.#backpressure = new Backpressure(this.jsm, config.backpressure);
    this.#limiter = new RateLimiter(await this.kv(HOST_BUCKETS.rateLimit));
    this.#runs = new RunRecords(await this.kv(HOST_BUCKETS.runs));
    this.#resources = new ResourceScope({ settings: this.#opts.settings ?? {}, nc: this.nc, js: this.js, kv: (b) => this.kv(b), log: this.log });

    const files = discoverFunctions(this.#opts.functionsDir);
    // Load every file before starting any trigger, so one bad file stops start-up cleanly.
    const resolved: { fn: ResolvedFunction; mtimeMs: number }[] = [];
    for (const { id, file } of files) {
      const def = await importFunction(file);
      resolved.push({ fn: resolveFunction(id, file, def, config.consumerDefaults, this.#opts.settings), mtimeMs: statSync(file).mtimeMs });
    }
    for (const r of resolved) await this.#startFunction(r.fn, r.mtimeMs, await this.#setupFunction(r.fn));

    this.#micro = new MicroResponder(this.nc, {
      name: config.service.name,
      version: config.service.version,
      description: "Syntropism function host",
      metadata: { server_version: this.features.version },
      functions: () => this.functions,
    });
    this.#micro.start();
    // ready means the server has every subscription: a request right after start() is answered
    await this.nc.flush();
    this.log.info({ functions: this.functions.map((f) => f.id), server: this.nc.getServer() }, "host started");
  }

  kv(bucket: string): Promise<KV> {
    let p = this.#buckets.get(bucket);
    if (!p) {
      p = this.#kvm.open(bucket);
      p.catch(() => this.#buckets.delete(bucket));
      this.#buckets.set(bucket, p);
    }
    return p;
  }

  #deps() {
    return {
      nc: this.nc,
      js: this.js,
      jsm: this.jsm,
      kv: (b: string) => this.kv(b),
      backpressure: this.#backpressure,
      limiter: this.#limiter,
      runs: this.#runs,
      log: this.log,
      features: this.features,
      classifyError: this.#opts.config.classifyError,
      deadLetters: { stream: this.#opts.config.deadLetter.stream, prefix: this.#opts.config.deadLetter.subjectPrefix },
    };
  }

  /** The function's shared resources, then its own setup's; returns what its release gets. */
  async #setupFunction(fn: ResolvedFunction): Promise<unknown> {
    const shared = await this.#resources.useAll(fn.id, fn.def.resources);
    let local: unknown = undefined;
    if (fn.def.setup) {
      try {
        local = await fn.def.setup({ ...this.#resources.context(fn.id), resources: shared } as never);
      } catch (err) {
        const cause = coerceError(err);
        throw new HostError(ErrorCode.ResourceSetup, `${fn.file}: setup failed: ${cause.message}`, { cause });
      }
      if (local !== undefined && (typeof local !== "object" || local === null)) {
        await runRelease(this.log, { fn: fn.id }, fn.def.release, local);
        throw new HostError(ErrorCode.ResourceSetup, `${fn.file}: setup must return an object (its keys join ctx.resources)`);
      }
    }
    fn.resources = Object.freeze({ ...shared, ...(local as object | undefined) });
    return local;
  }

  /** Stops a function's trigger (in-flight work gets the grace period), then releases its own setup. */
  async #stopFunction(l: Loaded, graceMs: number): Promise<void> {
    try {
      await l.trigger.stop(graceMs);
    } finally {
      await runRelease(this.log, { fn: l.fn.id }, l.fn.def.release, l.local);
    }
  }

  /**
   * Starts the trigger of a function whose resources are set up (`local`: what its own setup
   * returned). If the trigger cannot start, the function's own resources are released.
   */
  async #startFunction(fn: ResolvedFunction, mtimeMs: number, local: unknown): Promise<void> {
    let trigger: Trigger;
    try {
      if (fn.trigger.type === "jetstream") {
        await ensureConsumer(this.jsm, fn);
        trigger = new JetStreamTrigger(fn, this.#deps());
        await trigger.start();
      } else if (fn.trigger.type === "request") {
        trigger = new RequestTrigger(fn, this.#deps());
        trigger.start();
      } else {
        trigger = new ScheduleTrigger(fn, this.#deps());
        trigger.start();
      }
    } catch (err) {
      await runRelease(this.log, { fn: fn.id }, fn.def.release, local);
      throw err;
    }
    this.#loaded.set(fn.id, { fn, trigger, mtimeMs, local });
  }

  /**
   * Brings the running functions in line with the folder: new files start, removed files stop,
   * changed files (newer mtime) are imported again and restarted. A file that fails to load is
   * reported and its previous version keeps running.
   */
  async reload(): Promise<{ added: string[]; changed: string[]; removed: string[]; failed: string[] }> {
    const result = { added: [] as string[], changed: [] as string[], removed: [] as string[], failed: [] as string[] };
    let files;
    try {
      files = discoverFunctions(this.#opts.functionsDir);
    } catch (err) {
      this.log.error({ err: coerceError(err) }, "reload failed");
      return result;
    }
    const seen = new Set(files.map((f) => f.id));
    for (const [id, l] of this.#loaded) {
      if (!seen.has(id)) {
        await this.#stopFunction(l, this.#opts.graceMs ?? 10_000);
        this.#loaded.delete(id);
        result.removed.push(id);
      }
    }
    for (const { id, file } of files) {
      const mtimeMs = statSync(file).mtimeMs;
      const current = this.#loaded.get(id);
      if (current && current.mtimeMs >= mtimeMs && current.fn.file === file) continue;
      try {
        const def = await importFunction(file, ++this.#reloads);
        const fn = resolveFunction(id, file, def, this.#opts.config.consumerDefaults, this.#opts.settings);
        // set up before the running version stops: a setup that fails keeps that version
        const local = await this.#setupFunction(fn);
        if (current) {
          await this.#stopFunction(current, this.#opts.graceMs ?? 10_000);
          this.#loaded.delete(id);
        }
        await this.#startFunction(fn, mtimeMs, local);
        (current ? result.changed : result.added).push(id);
      } catch (err) {
        result.failed.push(id);
        this.log.child({ fn: id }).error({ err: coerceError(err) }, "could not load function; keeping the previous version");
      }
    }
    await this.nc.flush();
    if (result.added.length + result.changed.length + result.removed.length > 0) this.log.info(result, "functions reloaded");
    return result;
  }

  /** Stops triggers (in-flight work gets the grace period), then drains the connection. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const grace = this.#opts.graceMs ?? 10_000;
      this.#micro?.stop();
      // bounded even when the server is gone (a reconnecting connection never finishes draining)
      const triggers = Promise.allSettled([...this.#loaded.values()].map((l) => this.#stopFunction(l, grace)));
      if ((await within(triggers, grace + 5000)) === TIMED_OUT) this.log.warn({}, "triggers did not stop in time");
      // after the handlers that use them: in reverse order of setup
      if (this.#resources && (await within(this.#resources.releaseAll(), 10_000)) === TIMED_OUT) this.log.warn({}, "resources did not release in time");
      if (this.nc && !this.nc.isClosed()) {
        const drained = await within(this.nc.drain().catch(() => {}), 5000);
        if (drained === TIMED_OUT) this.log.warn({}, "connection did not drain in time; closing");
        if (!this.nc.isClosed()) await this.nc.close().catch(() => {});
      }
      this.log.info({}, "host stopped");
    })();
    return this.#stopping;
  }
}
