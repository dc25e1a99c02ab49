import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { nuid } from "@nats-io/transport-node";
import type { Logger } from "syntropism";
import type { Sql, TransactionSql } from "../economy/db.ts";
import { recordEvents, type Cause, type EventInput } from "../economy/events.ts";
import { agentBalance } from "../economy/ledger.ts";
import { toCredits } from "../economy/money.ts";
import { readPrices } from "../economy/projections.ts";
import { workspaceTemplate } from "../economy/workspaces.ts";
import type { Credentials } from "../auth/resource.ts";
import type { Finished, Limits, Sandbox, SandboxDriver } from "../sandbox/types.ts";
import { ensureWorkspace } from "./workspaces.ts";

// The orchestrator: runs each agent that won a runnable bundle for window W in a sandbox with
// exactly what it won, from the start of W to its end.
//
// The life of an execution (docs/agents.md has the picture):
//   schedule  → an `executions` row, pending (unique per agent and window: a redelivered allocation
//               finds it and does nothing), owned by this orchestrator under a lease
//   launch    → at the start of W: the workspace, env.json and credentials expiring at W's end plus
//               a grace; the sandbox started; running, execution_started on AUDIT
//   end of W  → SIGTERM, then a kill after AGENT_STOP_GRACE_MS
//   finish    → succeeded (exit 0) | failed (exit ≠ 0, or the sandbox could not run it) | killed
//               (OOM, or TIMEOUT: still running at W's end); usage and the output's last 64 KiB
//               recorded; execution_finished on AUDIT
//
// Every orchestrator renews a lease on the executions it runs. One whose lease lapsed (its worker
// was killed) is adopted by another, or by the same worker after a restart: a running execution
// is found again by its container's labels and watched to its end; a pending one whose window has
// not ended is launched; anything else is recorded as failed, LOST.

export type Allocation = {
  agentId: string;
  windowId: number;
  bundleId: string | null;
  windowStart: number;
  windowEnd: number;
  limits: Omit<Limits, "pids">;
  correlationId: string;
  sourceMsgId: string;
};

type Row = {
  id: string;
  agent_id: string;
  window_id: string;
  status: string;
  limits: Limits;
  correlation_id: string | null;
  ends_at: Date;
  created_at: Date;
  started_at: Date | null;
  container_id: string | null;
};

export type OrchestratorOptions = {
  sql: () => Promise<Sql>;
  driver: SandboxDriver;
  credentials: Credentials;
  workspacesRoot: string;
  /** The NATS URL the sandboxes reach (the relay forwards to it). */
  natsUrl: string;
  stopGraceMs: number;
  pidsLimit: number;
  log: Logger;
  /** Lease renewal and adoption cadence. Default 2000 ms; the lease lasts five of them. */
  leaseEveryMs?: number;
};

const LEASE_PERIODS = 5;

export class Orchestrator {
  readonly id = `orch-${nuid.next()}`;
  readonly #o: OrchestratorOptions;
  readonly #live = new Map<string, { sandbox?: Sandbox; timers: NodeJS.Timeout[]; stoppedAtEnd: boolean }>();
  #tick: NodeJS.Timeout | undefined;
  #closing = false;

  constructor(o: OrchestratorOptions) {
    this.#o = o;
  }

  get driver(): SandboxDriver {
    return this.#o.driver;
  }

  #leaseMs(): number {
    return (this.#o.leaseEveryMs ?? 2000) * LEASE_PERIODS;
  }

  /** Starts renewing leases and adopting executions whose owner went away. */
  start(): void {
    const every = this.#o.leaseEveryMs ?? 2000;
    const loop = async () => {
      try {
        await this.#renew();
        await this.#adopt();
      } catch (err) {
        this.#o.log.warn({ err: (err as Error).message }, "orchestrator lease round failed; retrying");
      }
      if (!this.#closing) this.#tick = setTimeout(loop, every);
    };
    this.#tick = setTimeout(loop, 0);
  }

  /**
   * Records the execution an allocation pays for and arranges its launch at the window's start.
   * Returns the execution id, or undefined when the agent has one for that window already.
   */
  async schedule(a: Allocation): Promise<string | undefined> {
    const sql = await this.#o.sql();
    const limits: Limits = { ...a.limits, pids: this.#o.pidsLimit };
    const [row] = await sql<Row[]>`
      INSERT INTO executions (agent_id, bundle_id, window_id, status, sandbox, limits, source_msg_id, correlation_id, ends_at, owner, lease_until)
      VALUES (${a.agentId}, ${a.bundleId}, ${a.windowId}, 'pending', ${this.#o.driver.name}, ${sql.json(limits)}, ${a.sourceMsgId}, ${a.correlationId},
              ${new Date(a.windowEnd)}, ${this.id}, now() + ${`${this.#leaseMs()} milliseconds`}::interval)
      ON CONFLICT (agent_id, window_id) DO NOTHING
      RETURNING id, agent_id, window_id, status, limits, correlation_id, ends_at, created_at, started_at, container_id`;
    if (!row) return undefined;
    const id = String(row.id);
    this.#plan(row, a.windowStart);
    return id;
  }

  #plan(row: Row, startAt: number): void {
    const id = String(row.id);
    const entry = { timers: [] as NodeJS.Timeout[], stoppedAtEnd: false };
    this.#live.set(id, entry);
    entry.timers.push(setTimeout(() => void this.#launch(row), Math.max(0, startAt - Date.now())));
  }

  async #launch(row: Row): Promise<void> {
    const id = String(row.id);
    const log = this.#o.log.child({ execution_id: id, agent_id: row.agent_id, window_id: Number(row.window_id), correlation_id: row.correlation_id });
    const entry = this.#live.get(id);
    if (!entry || this.#closing) return;
    const endsAt = row.ends_at.getTime();
    if (Date.now() >= endsAt) return void this.#finish(row, { exitCode: -1, oomKilled: false, reason: "error", outputTail: "", error: "the window ended before the agent could start" }, "MISSED");
    let sandbox: Sandbox;
    try {
      const sql = await this.#o.sql();
      // credits and prices as of the launch
      const [bal, prices, template] = await Promise.all([agentBalance(sql, row.agent_id), readPrices(sql), workspaceTemplate(sql, row.agent_id)]);
      // made at genesis or spawn; made again, from the template recorded then, if it went missing
      const workspace = ensureWorkspace(this.#o.workspacesRoot, row.agent_id, template);
      const creds = await this.#o.credentials.issueForWindow(row.agent_id, Number(row.window_id));
      const credsDir = join(workspace, ".nats");
      mkdirSync(credsDir, { recursive: true, mode: 0o700 });
      writeFileSync(join(credsDir, "agent.creds"), creds.creds, { mode: 0o600 });
      const env = {
        agent_id: row.agent_id,
        execution_id: id,
        window_id: Number(row.window_id),
        window_end: new Date(endsAt).toISOString(),
        credits: toCredits(bal.available),
        prices: Object.fromEntries(prices.map((p) => [p.resource, p.price])),
        limits: row.limits,
        nats_url: this.#o.driver.isolated ? "nats://127.0.0.1:4222" : this.#o.natsUrl,
        credentials_file: this.#o.driver.isolated ? "/workspace/.nats/agent.creds" : join(credsDir, "agent.creds"),
        inbox_prefix: creds.inboxPrefix,
        correlation_id: row.correlation_id,
      };
      writeFileSync(join(workspace, "env.json"), `${JSON.stringify(env, null, 2)}\n`);
      // an isolated driver hands the workspace, credentials included, to the sandbox's user
      sandbox = await this.#o.driver.launch({
        executionId: id,
        agentId: row.agent_id,
        windowId: Number(row.window_id),
        correlationId: row.correlation_id ?? id,
        workspace,
        limits: row.limits,
        natsUrl: this.#o.natsUrl,
        labels: { "syntropism.orchestrator": "1" },
        onOutput: (line, stream) => log.info({ stream, line: line.slice(0, 2000) }, "agent output"),
      });
    } catch (err) {
      log.error({ err: (err as Error).message }, "agent could not be launched");
      return void this.#finish(row, { exitCode: -1, oomKilled: false, reason: "error", outputTail: "", error: (err as Error).message }, "SANDBOX");
    }
    entry.sandbox = sandbox;
    const sql = await this.#o.sql();
    await sql.begin(async (tx) => {
      await tx`UPDATE executions SET status = 'running', container_id = ${sandbox.id}, started_at = now() WHERE id = ${id}`;
      await this.#emit(tx, row, "started", [
        {
          type: "execution_started",
          to: row.agent_id,
          payload: { execution_id: id, agent_id: row.agent_id, window_id: Number(row.window_id), sandbox: this.#o.driver.name, container_id: sandbox.id, limits: { memory_mib: row.limits.memoryMiB, cpu_millicores: row.limits.cpuMillicores, pids: row.limits.pids }, ends_at: new Date(endsAt).toISOString() },
        },
      ]);
    });
    log.info({ container_id: sandbox.id, sandbox: this.#o.driver.name, limits: row.limits }, "agent started");
    this.#watch(row, sandbox);
  }

  /** Stops the sandbox at the window's end and records how it finished. */
  #watch(row: Row, sandbox: Sandbox): void {
    const id = String(row.id);
    const entry = this.#live.get(id) ?? { timers: [], stoppedAtEnd: false };
    entry.sandbox = sandbox;
    this.#live.set(id, entry);
    entry.timers.push(
      setTimeout(() => {
        entry.stoppedAtEnd = true;
        void sandbox.stop(this.#o.stopGraceMs).catch((err: Error) => this.#o.log.warn({ execution_id: id, err: err.message }, "stopping an agent at its window's end failed"));
      }, Math.max(0, row.ends_at.getTime() - Date.now())),
    );
    void sandbox.wait().then(
      (f) => this.#finish(row, f, f.oomKilled ? "OOM" : entry.stoppedAtEnd ? "TIMEOUT" : f.reason === "error" ? "SANDBOX" : "EXIT"),
      (err: Error) => this.#finish(row, { exitCode: -1, oomKilled: false, reason: "error", outputTail: "", error: err.message }, "SANDBOX"),
    );
  }

  async #finish(row: Row, f: Finished, reason: "EXIT" | "OOM" | "TIMEOUT" | "SANDBOX" | "MISSED" | "LOST"): Promise<void> {
    const id = String(row.id);
    const entry = this.#live.get(id);
    for (const t of entry?.timers ?? []) clearTimeout(t);
    this.#live.delete(id);
    const status = reason === "OOM" || reason === "TIMEOUT" ? "killed" : reason === "EXIT" && f.exitCode === 0 ? "succeeded" : "failed";
    const usage = { cpu_ms: f.cpuMs ?? null, memory_peak_mb: f.peakMemoryBytes === undefined ? null : Math.round((f.peakMemoryBytes / 1048576) * 10) / 10 };
    try {
      const sql = await this.#o.sql();
      await sql.begin(async (tx) => {
        const [done] = await tx<{ started_at: Date | null; finished_at: Date }[]>`
          UPDATE executions SET status = ${status}, reason = ${reason}, exit_code = ${f.exitCode >= 0 ? f.exitCode : null}, usage = ${tx.json(usage)},
                 output_tail = ${f.outputTail.slice(-65536)}, error = ${f.error ?? null}, finished_at = now(), owner = NULL
           WHERE id = ${id} AND status IN ('pending', 'running')
          RETURNING started_at, finished_at`;
        if (!done) return; // finished already (by an adopter): said once
        await this.#emit(tx, row, "finished", [
          {
            type: "execution_finished",
            to: row.agent_id,
            payload: {
              execution_id: id,
              agent_id: row.agent_id,
              window_id: Number(row.window_id),
              status,
              reason,
              exit_code: f.exitCode >= 0 ? f.exitCode : null,
              ...usage,
              duration_ms: done.started_at ? done.finished_at.getTime() - done.started_at.getTime() : null,
            },
          },
        ]);
      });
      this.#o.log.info({ execution_id: id, agent_id: row.agent_id, status, reason, exit_code: f.exitCode, ...usage, ...(f.error ? { error: f.error } : {}) }, "agent finished");
    } catch (err) {
      // the lease lapses and an adopter records it
      this.#o.log.error({ execution_id: id, err: (err as Error).message }, "recording an execution's end failed");
    }
  }

  async #emit(tx: TransactionSql, row: Row, what: string, events: EventInput[]): Promise<void> {
    const cause: Cause = { sourceMsgId: `execution:${row.id}:${what}`, correlationId: row.correlation_id ?? String(row.id), causationId: `execution:${row.id}`, from: "orchestrator" };
    await recordEvents(tx, cause, events);
  }

  async #renew(): Promise<void> {
    if (!this.#live.size) return;
    const sql = await this.#o.sql();
    await sql`UPDATE executions SET lease_until = now() + ${`${this.#leaseMs()} milliseconds`}::interval
               WHERE owner = ${this.id} AND status IN ('pending', 'running')`;
  }

  /** Takes over executions whose owner's lease lapsed. */
  async #adopt(): Promise<void> {
    const sql = await this.#o.sql();
    const rows = await sql<Row[]>`
      UPDATE executions SET owner = ${this.id}, lease_until = now() + ${`${this.#leaseMs()} milliseconds`}::interval
       WHERE id IN (SELECT id FROM executions WHERE status IN ('pending', 'running') AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED)
      RETURNING id, agent_id, window_id, status, limits, correlation_id, ends_at, created_at, started_at, container_id`;
    if (!rows.length) return;
    const running = rows.some((r) => r.status === "running") ? await this.#o.driver.running({ "syntropism.orchestrator": "1" }).catch(() => []) : [];
    for (const row of rows) {
      const id = String(row.id);
      if (this.#live.has(id)) continue;
      const lost = (why: string) => this.#finish(row, { exitCode: -1, oomKilled: false, reason: "error", outputTail: "", error: why }, "LOST");
      if (row.status === "running") {
        const found = running.find((c) => c.labels["syntropism.execution"] === id);
        if (!found) {
          await lost(`its orchestrator went away and its ${this.#o.driver.name} sandbox ${row.container_id ?? ""} is no longer running`);
          continue;
        }
        this.#o.log.info({ execution_id: id, agent_id: row.agent_id, container_id: found.id }, "adopted a running agent");
        this.#watch(row, found.attach());
      } else if (row.ends_at.getTime() > Date.now()) {
        this.#o.log.info({ execution_id: id, agent_id: row.agent_id }, "adopted a pending agent");
        this.#plan(row, 0);
      } else await lost("its orchestrator went away before it started, and its window has ended");
    }
  }

  /**
   * Stops watching and gives up its leases at once: the sandboxes keep running to the end of their
   * window, and the next orchestrator (another worker, or this one restarted) adopts them without
   * waiting for the leases to lapse.
   */
  async close(): Promise<void> {
    this.#closing = true;
    clearTimeout(this.#tick);
    for (const e of this.#live.values()) for (const t of e.timers) clearTimeout(t);
    this.#live.clear();
    try {
      const sql = await this.#o.sql();
      await sql`UPDATE executions SET owner = NULL, lease_until = NULL WHERE owner = ${this.id} AND status IN ('pending', 'running')`;
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, "could not give up the orchestrator's leases; they lapse by themselves");
    }
  }
}
