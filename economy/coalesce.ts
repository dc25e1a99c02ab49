// Coalescing of after-commit work that many commands share: the read model of an agent many bids
// touched, the published mark of many bids' events. Items added meanwhile are handed over together
// `delayMs` after the first, one run at a time and in order; an item added twice is handed once.

export class Coalescer<T> {
  readonly #run: (items: T[]) => Promise<void>;
  readonly #delayMs: number;
  readonly #onError: (err: unknown) => void;
  #items = new Set<T>();
  #timer?: NodeJS.Timeout;
  #running: Promise<void> = Promise.resolve();

  /** A scheduled run's failure goes to `onError`; its items are not retried (a later writer or a relay covers them). */
  constructor(run: (items: T[]) => Promise<void>, options: { delayMs?: number; onError?: (err: unknown) => void } = {}) {
    this.#run = run;
    this.#delayMs = options.delayMs ?? 20;
    this.#onError = options.onError ?? (() => {});
  }

  add(items: Iterable<T>): void {
    for (const item of items) this.#items.add(item);
    if (!this.#timer && this.#items.size) this.#timer = setTimeout(() => void this.flush().catch(this.#onError), this.#delayMs);
  }

  /** Hands over what is pending now, after any run in progress. */
  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const items = [...this.#items];
    this.#items.clear();
    const run = this.#running.then(() => (items.length ? this.#run(items) : undefined));
    this.#running = run.catch(() => {});
    return run;
  }
}
