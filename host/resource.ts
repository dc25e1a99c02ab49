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

type Entry = { def: Resource<unknown>; value: Promise<unknown>; ready: boolean };

export type ResourceHostDeps = Omit<ResourceContext, "use" | "log"> & { log: Logger };

/**
 * The shared resources of one host. `use` sets a resource up once (concurrent callers share the
 * setup); `releaseAll` releases them in reverse order of completed setup.
 */
export class ResourceScope {
  readonly #deps: ResourceHostDeps;
  readonly #entries = new Map<string, Entry>();
  /** Names in order of completed setup: released from the end. */
  readonly #order: string[] = [];

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
      use: <T>(r: Resource<T>) => this.#use(r, [...chain, owner]),
    };
  }

  use<T>(resource: Resource<T>): Promise<T> {
    return this.#use(resource, []);
  }

  #use<T>(resource: Resource<T>, chain: readonly string[]): Promise<T> {
    if (!isResource(resource)) return Promise.reject(new HostError(ErrorCode.Config, `${chain.at(-1) ?? "a function"} names something that is not a defineResource(...) value`));
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
    const entry: Entry = { def: resource as Resource<unknown>, value: Promise.resolve(undefined), ready: false };
    entry.value = (async () => {
      try {
        const value = await resource.setup(this.context(name, chain));
        entry.ready = true;
        this.#order.push(name);
        return value;
      } catch (err) {
        this.#entries.delete(name);
        const cause = coerceError(err);
        if (cause instanceof HostError && cause.code === ErrorCode.ResourceSetup) throw cause;
        throw new HostError(ErrorCode.ResourceSetup, `resource ${name}: setup failed: ${cause.message}`, { cause });
      }
    })();
    this.#entries.set(name, entry);
    return entry.value as Promise<T>;
  }

  /** Sets up every resource in `resources`, concurrently; resolves their values by key. */
  async useAll(owner: string, resources: Readonly<Record<string, Resource<unknown>>> | undefined): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    await Promise.all(
      Object.entries(resources ?? {}).map(async ([key, r]) => {
        if (!isResource(r)) throw new HostError(ErrorCode.Config, `${owner}: resources.${key} is not a defineResource(...) value`);
        out[key] = await this.#use(r, [owner]);
      }),
    );
    return out;
  }

  /** Releases every resource set up, newest first. Safe to call more than once. */
  async releaseAll(): Promise<void> {
    while (this.#order.length) {
      const name = this.#order.pop()!;
      const entry = this.#entries.get(name);
      this.#entries.delete(name);
      if (!entry?.ready || !entry.def.release) continue;
      await release(this.#deps.log, name, entry);
    }
  }
}

async function release(log: Logger, name: string, entry: Entry): Promise<void> {
  try {
    const value = await entry.value;
    await entry.def.release!(value);
  } catch (err) {
    log.error({ resource: name, err: coerceError(err) }, "resource release failed");
  }
}

/** Runs a function's own release (its `setup`'s value), logging a failure. */
export async function releaseLocal(log: Logger, owner: string, releaseFn: ((value: never) => void | Promise<void>) | undefined, value: unknown): Promise<void> {
  if (!releaseFn) return;
  try {
    await releaseFn(value as never);
  } catch (err) {
    log.error({ fn: owner, err: coerceError(err) }, "function release failed");
  }
}
