import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ErrorCode, HostError, coerceError } from "./errors.ts";
import type { Logger } from "./log.ts";

// Resources: what functions share in one host — a database pool, a client of an outside service, a
// batcher — set up once, handed to handlers typed, released in reverse order of setup.
//
// A shared resource is declared once with defineResource and named by the functions that use it
// (`resources: { economy }`); it is set up when the first of them starts and released when the
// host stops, after every trigger has stopped. A function may also declare its own `setup`: what
// it returns joins `ctx.resources` for that function only and is released when the function stops
// (the host stops, the file is removed, or `host dev` reloads it). The model is graphile-worker's
// task helpers and Fastify's plugins: nothing lives in module variables, so two hosts in one
// process never share state.

const RESOURCE_MARK = Symbol.for("syntropism.resource");

/** What a resource's setup (and a function's) gets from the host. */
export type ResourceContext = {
  /** The settings the host was given (HostOptions.settings): validated once, at start-up. */
  settings: Readonly<Record<string, unknown>>;
  nc: NatsConnection;
  js: JetStreamClient;
  /** Opens (and caches) a KV bucket declared in streams.config.ts. */
  kv(bucket: string): Promise<KV>;
  /** Bound to the resource (or function) being set up. */
  log: Logger;
  /** Another shared resource, set up first if it is not yet (and so released after this one). */
  use<T>(resource: Resource<T>): Promise<T>;
};

export type ResourceOptions<T> = {
  /** Unique in a host; shown in logs and errors. */
  name: string;
  setup(ctx: ResourceContext): T | Promise<T>;
  /** Runs once on stop, in reverse order of setup. Errors are logged, not thrown. */
  release?(value: T): void | Promise<void>;
};

export type Resource<T> = Readonly<ResourceOptions<T>> & { readonly [RESOURCE_MARK]: true };

/** The value a resource's setup resolves to. */
export type ResourceValue<R> = R extends Resource<infer T> ? T : never;
/** `{ economy: Resource<Economy> }` → `{ economy: Economy }`. */
export type ResourceValues<U> = { [K in keyof U]: ResourceValue<U[K]> };

/** Declares a shared resource. Functions name it in `resources`. */
export function defineResource<T>(options: ResourceOptions<T>): Resource<T> {
  if (!/^[A-Za-z0-9_.\/-]+$/.test(options.name)) throw new HostError(ErrorCode.Config, `resource name "${options.name}" may contain only letters, digits, _ . / and -`);
  return Object.freeze({ ...options, [RESOURCE_MARK]: true as const });
}

export function isResource(value: unknown): value is Resource<unknown> {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[RESOURCE_MARK] === true;
}

type Entry = { def: Resource<unknown>; value: Promise<unknown> };

export type ResourceHostDeps = Omit<ResourceContext, "use" | "log"> & { log: Logger };

/**
 * The shared resources of one host. A resource is set up once (concurrent users share the setup);
 * `releaseAll` releases them in reverse order of completed setup.
 */
export class ResourceScope {
  readonly #deps: ResourceHostDeps;
  readonly #entries = new Map<string, Entry>();
  /** In order of completed setup: released from the end. */
  readonly #ready: { name: string; def: Resource<unknown>; value: unknown }[] = [];

  constructor(deps: ResourceHostDeps) {
    this.#deps = deps;
  }

  /** A context for setting up `owner` (a resource or a function), whose `use` detects cycles. */
  context(owner: string, chain: readonly string[] = []): ResourceContext {
    return {
      settings: this.#deps.settings,
      nc: this.#deps.nc,
      js: this.#deps.js,
      kv: this.#deps.kv,
      log: this.#deps.log.child({ resource: owner }),
      use: <T>(r: Resource<T>) => this.#use(r, [...chain, owner], "something"),
    };
  }

  /** `what` names the reference in the error when it is not a resource (`resources.db`). */
  #use<T>(resource: Resource<T>, chain: readonly string[], what: string): Promise<T> {
    if (!isResource(resource)) return Promise.reject(new HostError(ErrorCode.Config, `${chain.at(-1)}: ${what} is not a defineResource(...) value`));
    const name = resource.name;
    if (chain.includes(name)) return Promise.reject(new HostError(ErrorCode.ResourceSetup, `resources depend on each other in a cycle: ${[...chain, name].join(" → ")}`));
    const known = this.#entries.get(name);
    if (known) {
      if (known.def !== resource) {
        // a module defining it was loaded again (host dev): the running one stays until a restart
        this.#deps.log.warn({ resource: name }, "a second definition of this resource was loaded; the first stays in use until the host restarts");
      }
      return known.value as Promise<T>;
    }
    const value = (async () => {
      try {
        const v = await resource.setup(this.context(name, chain));
        this.#ready.push({ name, def: resource as Resource<unknown>, value: v });
        return v;
      } catch (err) {
        this.#entries.delete(name);
        const cause = coerceError(err);
        if (cause instanceof HostError && cause.code === ErrorCode.ResourceSetup) throw cause;
        throw new HostError(ErrorCode.ResourceSetup, `resource ${name}: setup failed: ${cause.message}`, { cause });
      }
    })();
    this.#entries.set(name, { def: resource as Resource<unknown>, value });
    return value;
  }

  /** Sets up every resource in `resources`, concurrently; resolves their values by key. */
  async useAll(owner: string, resources: Readonly<Record<string, Resource<unknown>>> | undefined): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    await Promise.all(Object.entries(resources ?? {}).map(async ([key, r]) => (out[key] = await this.#use(r, [owner], `resources.${key}`))));
    return out;
  }

  /** Releases every resource set up, newest first. Safe to call more than once. */
  async releaseAll(): Promise<void> {
    for (let r = this.#ready.pop(); r; r = this.#ready.pop()) {
      this.#entries.delete(r.name);
      await runRelease(this.#deps.log, { resource: r.name }, r.def.release, r.value);
    }
  }
}

/** Runs a release (a resource's, or a function's own), logging a failure rather than throwing it. */
export async function runRelease(log: Logger, who: { resource: string } | { fn: string }, release: ((value: never) => void | Promise<void>) | undefined, value: unknown): Promise<void> {
  if (!release) return;
  try {
    await release(value as never);
  } catch (err) {
    log.error({ ...who, err: coerceError(err) }, "release failed");
  }
}
