import { fork, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import type { Logger } from "./log.ts";

// `host start --workers N`: N worker processes on the same durable consumers. The supervisor
// restarts a worker that dies (exponential backoff, reset once a worker has been ready for
// HEALTHY_AFTER_MS), forwards SIGTERM/SIGINT, waits for every worker's graceful stop and exits 0. A
// worker that fails before it is ready (a bad function file, drift) stops the whole start-up.
//
// Workers' output comes through the supervisor a whole line at a time, so lines of several workers
// never interleave mid-line; a line that is not a JSON object (a Node warning, a stray print) is
// wrapped into one, so every line of `host start` is one JSON object.

/** A worker ready this long is healthy: its next death restarts it after the initial delay again. */
export const HEALTHY_AFTER_MS = 5000;
/** Longest output line forwarded as is; a longer one is replaced by a bounded notice. */
const MAX_LINE_CHARS = 64 * 1024;

export type SupervisorOptions = {
  workers: number;
  /** Module run in each worker (the CLI), and its arguments. */
  module: string;
  args: string[];
  log: Logger;
  /** Time a worker gets to stop after SIGTERM before it is killed. */
  stopTimeoutMs: number;
  restartInitialMs?: number;
  restartMaxMs?: number;
  /** Variables set in each worker's environment on top of this process's (e.g. the resolved NATS_URL). */
  env?: Record<string, string>;
};

type Slot = { index: number; child?: ChildProcess; ready: boolean; readyAt: number; restarts: number; timer?: NodeJS.Timeout };

export type WorkerMessage = { type: "ready"; pid: number } | { type: "failed"; message: string };

/** The parent's Node flags, plus the tsx loader when the parent registered it through the API. */
export function workerExecArgv(): string[] {
  const argv = process.execArgv;
  if (argv.some((a) => a.includes("tsx"))) return argv;
  return [...argv, "--import", import.meta.resolve("tsx")];
}

export class Supervisor {
  readonly #opts: SupervisorOptions;
  readonly #slots: Slot[] = [];
  #stopping = false;
  #startup?: { resolve: () => void; reject: (err: Error) => void; pending: number };

  constructor(opts: SupervisorOptions) {
    this.#opts = opts;
  }

  get pids(): number[] {
    return this.#slots.flatMap((s) => (s.child?.pid ? [s.child.pid] : []));
  }

  /** Forks every worker; resolves when all are ready, rejects when one fails to start. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#startup = { resolve, reject, pending: this.#opts.workers };
      for (let i = 0; i < this.#opts.workers; i++) {
        const slot: Slot = { index: i, ready: false, readyAt: 0, restarts: 0 };
        this.#slots.push(slot);
        this.#spawn(slot);
      }
    });
  }

  #spawn(slot: Slot): void {
    const { log } = this.#opts;
    slot.ready = false;
    const child = fork(this.#opts.module, this.#opts.args, {
      execArgv: workerExecArgv(),
      env: { ...process.env, ...this.#opts.env, SYNTROPISM_WORKER: String(slot.index) },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    slot.child = child;
    forwardLines(child.stdout!, process.stdout, slot.index, "stdout");
    forwardLines(child.stderr!, process.stderr, slot.index, "stderr");
    child.on("message", (m: WorkerMessage) => {
      if (m?.type === "ready") {
        slot.ready = true;
        slot.readyAt = Date.now();
        log.info({ index: slot.index, pid: child.pid }, "worker ready");
        if (this.#startup && --this.#startup.pending === 0) {
          this.#startup.resolve();
          this.#startup = undefined;
        }
      }
    });
    child.on("exit", (code, signal) => {
      slot.child = undefined;
      if (this.#stopping) return;
      if (!slot.ready && this.#startup) {
        // failed during start-up: the cause is already on stderr; stop everything
        const startup = this.#startup;
        this.#startup = undefined;
        void this.stop().then(() => startup.reject(new Error(`worker ${slot.index} failed to start (exit ${code ?? signal})`)));
        return;
      }
      const healthy = slot.ready && Date.now() - slot.readyAt >= HEALTHY_AFTER_MS;
      if (healthy) slot.restarts = 0;
      const initial = this.#opts.restartInitialMs ?? 250;
      const delay = Math.min(this.#opts.restartMaxMs ?? 10_000, initial * 2 ** slot.restarts);
      slot.restarts++;
      log.warn({ index: slot.index, pid: child.pid, code, signal, restart_in_ms: delay }, "worker died; restarting");
      slot.timer = setTimeout(() => {
        slot.timer = undefined;
        if (!this.#stopping) this.#spawn(slot);
      }, delay);
    });
  }

  /** SIGTERM to every worker; waits for them (killing any that outlive the stop timeout). */
  async stop(): Promise<void> {
    this.#stopping = true;
    const waits: Promise<void>[] = [];
    for (const slot of this.#slots) {
      if (slot.timer) clearTimeout(slot.timer);
      const child = slot.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) continue;
      waits.push(
        new Promise<void>((resolve) => {
          const kill = setTimeout(() => child.kill("SIGKILL"), this.#opts.stopTimeoutMs);
          child.once("exit", () => {
            clearTimeout(kill);
            resolve();
          });
          child.kill("SIGTERM");
        }),
      );
    }
    await Promise.all(waits);
  }
}

/** Copies a worker's output line by line; each line leaves in one write, as one JSON object. */
function forwardLines(from: Readable, to: Writable, worker: number, stream: "stdout" | "stderr"): void {
  const lines = createInterface({ input: from, crlfDelay: Infinity });
  lines.on("line", (line) => {
    if (!line) return;
    let out = line;
    if (line.length > MAX_LINE_CHARS) {
      out = JSON.stringify({ time: new Date().toISOString(), level: "warn", msg: "log line too long; cut", worker, stream, chars: line.length, preview: line.slice(0, 1024) });
    } else if (!(line.startsWith("{") && line.endsWith("}"))) {
      out = JSON.stringify({ time: new Date().toISOString(), level: stream === "stderr" ? "warn" : "info", msg: line, worker, stream });
    }
    to.write(`${out}\n`);
  });
}
