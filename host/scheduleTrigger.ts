import type { MessageInfo } from "./define.ts";
import { createContext, Delivery, type ContextDeps } from "./context.ts";
import { coerceError, serializeError } from "./errors.ts";
import { recordRun, type ResolvedFunction } from "./resolved.ts";
import { Cancellation, runHandler, ShutdownAbort, TIMED_OUT, within } from "./runHandler.ts";
import { endSpan, otelContext, startDeliverySpan, trace } from "./tracing.ts";
import { ROOT_CONTEXT } from "@opentelemetry/api";

// A handler run on every `everyMs` boundary of the wall clock (tick k fires at k × everyMs), by
// every worker. Its msg id is `schedule:<fn>:<k>`, so what it publishes has the same derived msg
// ids on every worker and JetStream keeps one copy: exactly one `tick` per window, however many
// workers run. A tick that fails is logged; the next boundary brings the next one.

export type SchedulePayload = { tick: number; scheduledAt: string; everyMs: number };

export class ScheduleTrigger {
  readonly fn: ResolvedFunction;
  readonly #deps: ContextDeps;
  readonly #everyMs: number;
  #timer?: NodeJS.Timeout;
  #running?: { cancel: Cancellation; done: Promise<void> };
  #stopped = false;

  constructor(fn: ResolvedFunction, deps: ContextDeps) {
    this.fn = fn;
    this.#deps = deps;
    this.#everyMs = (fn.trigger as { everyMs: number }).everyMs;
  }

  start(): void {
    this.#arm();
  }

  #arm(): void {
    if (this.#stopped) return;
    const now = Date.now();
    const next = (Math.floor(now / this.#everyMs) + 1) * this.#everyMs;
    this.#timer = setTimeout(() => this.#fire(next / this.#everyMs), next - now);
  }

  #fire(tick: number): void {
    this.#arm();
    // one run at a time: a tick that comes while the previous one still runs is skipped
    if (this.#running) return;
    const cancel = new Cancellation();
    const done = this.#run(tick, cancel).finally(() => (this.#running = undefined));
    this.#running = { cancel, done };
  }

  async #run(tick: number, cancel: Cancellation): Promise<void> {
    const fn = this.fn;
    fn.stats.received++;
    const started = process.hrtime.bigint();
    const info: MessageInfo = { fn: fn.id, subject: `schedule.${fn.consumer}`, headers: {}, msgId: `schedule:${fn.id}:${tick}`, attempt: 1, deliveryCount: 1 };
    const span = startDeliverySpan("process", info.subject, ROOT_CONTEXT, () => ({ "syntropism.function": fn.id, "syntropism.tick": tick }));
    const delivery = new Delivery(span, trace.setSpan(ROOT_CONTEXT, span), this.#deps.log, info);
    const payload: SchedulePayload = { tick, scheduledAt: new Date(tick * this.#everyMs).toISOString(), everyMs: this.#everyMs };
    try {
      const ctx = createContext(fn, info, this.#deps, cancel, () => {}, delivery);
      await otelContext.with(delivery.otel, () => runHandler(fn, payload, ctx, cancel));
      fn.stats.succeeded++;
      endSpan(span, "ack");
    } catch (err) {
      if (!(err instanceof ShutdownAbort)) {
        fn.stats.failed++;
        const e = serializeError(err);
        fn.stats.lastError = `${e.code}: ${e.message}`;
        delivery.log.warn({ tick, error: e }, "scheduled run failed");
        endSpan(span, "error", e);
      }
    } finally {
      recordRun(fn.stats, started);
    }
  }

  async stop(graceMs: number): Promise<void> {
    this.#stopped = true;
    this.fn.stats.loop.state = "stopped";
    clearTimeout(this.#timer);
    const running = this.#running;
    if (!running) return;
    if ((await within(running.done, graceMs)) === TIMED_OUT) {
      running.cancel.abort(new ShutdownAbort());
      await running.done.catch((err) => this.#deps.log.warn({ err: coerceError(err) }, "scheduled run did not stop"));
    }
  }
}
