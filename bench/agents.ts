import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Docker from "dockerode";
import { openAccount } from "../economy/ledger.ts";
import { Credentials } from "../auth/resource.ts";
import { Orchestrator } from "../orchestrator/orchestrator.ts";
import { DockerDriver } from "../sandbox/docker.ts";
import { ensureImage, planImage } from "../sandbox/image.ts";
import { createLogger } from "../host/log.ts";
import { startTestDocker } from "../testing/docker.ts";
import { startTestNats } from "../testing/nats.ts";
import { startTestDatabase } from "../testing/postgres.ts";
import { log, round, summarize, verdictOf, type BenchResult, type Summary } from "./lib.ts";
import type { Options } from "./options.ts";

// Agents launched: from the orchestrator's decision (an allocation scheduled, its window open) to
// the agent's first NATS message through the relay — the image's default agent publishes
// `agent.<id>.cognitive_cycle_started` as soon as it has connected with its own credentials —
// with 1 and with N agents at once, beside the engine's own floor measured in the same run: a bare
// `createContainer` + `start` of the same image, as many at once. Private engine, nats-server with
// authentication, embedded PostgreSQL for the executions.

type Row = { variant: string; agents: number; summary: Summary; allMs: number };

async function floor(docker: Docker, image: string, n: number): Promise<{ times: Float64Array; allMs: number }> {
  const times = new Float64Array(n);
  const t0 = performance.now();
  const made: Docker.Container[] = [];
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const t = performance.now();
      const c = await docker.createContainer({ Image: image, Cmd: [process.execPath, "-e", "0"], HostConfig: { NetworkMode: "none" }, Labels: { "syntropism.bench": "floor" } });
      made.push(c);
      await c.start();
      times[i] = performance.now() - t;
    }),
  );
  const allMs = performance.now() - t0;
  await Promise.all(made.map((c) => c.remove({ force: true }).catch(() => {})));
  return { times, allMs };
}

export async function agents(o: Options): Promise<BenchResult> {
  const hooks: (() => Promise<void>)[] = [];
  const scope = { after: (fn: () => Promise<void>) => void hooks.push(fn) };
  const rows: Row[] = [];
  let version = "unknown";
  const workspaces = mkdtempSync(join(tmpdir(), "syntropism-bench-agents-"));
  try {
    const [engine, nats, db] = await Promise.all([startTestDocker(scope), startTestNats(scope, { auth: true }), startTestDatabase(scope)]);
    version = nats.nc.info?.version ?? version;
    const built = await ensureImage(engine.docker, planImage());
    log(`agents: image ${built.tag}${built.built ? ` built in ${Math.round(built.ms)} ms` : ""}`);
    const driver = new DockerDriver({ docker: engine.docker, image: built.tag });
    const credentials = new Credentials({ authority: nats.auth!.authority, authRequired: true, servers: () => nats.url, windowMs: 60_000 });
    const orch = new Orchestrator({
      sql: async () => db.sql as never,
      driver,
      credentials,
      workspacesRoot: workspaces,
      natsUrl: nats.url,
      stopGraceMs: 500,
      pidsLimit: 64,
      log: createLogger({ level: "error", sink: () => {} }),
    });
    const first = new Map<string, number>();
    nats.nc.subscribe("agent.*.cognitive_cycle_started", { callback: (_e, m) => void (first.has(m.subject.split(".")[1]!) || first.set(m.subject.split(".")[1]!, performance.now())) });
    await nats.nc.flush();
    // the next minute-long window, opened now: it ends 60–120 s from here, and credentials with it
    const window = Math.floor(Date.now() / 60_000) + 1;
    let round_ = 0;
    for (const n of o.agentCounts) {
      const f = await floor(engine.docker, built.tag, n);
      rows.push({ variant: "engine floor: createContainer + start", agents: n, summary: summarize(f.times), allMs: round(f.allMs) });
      const ids = Array.from({ length: n }, (_, i) => `b${round_}x${i}`);
      for (const id of ids) await openAccount(db.sql as never, id);
      const decided = new Map<string, number>();
      const decidedWall = new Map<string, number>();
      const t0 = performance.now();
      const t0Wall = Date.now();
      const now = Date.now();
      for (const id of ids) {
        decided.set(id, performance.now());
        decidedWall.set(id, Date.now());
        await orch.schedule({ agentId: id, windowId: window, bundleId: null, windowStart: now, windowEnd: (window + 1) * 60_000, limits: { memoryMiB: 128, cpuMillicores: 500 }, correlationId: `bench-${id}`, sourceMsgId: `bench-${id}` });
      }
      await waitUntil(() => ids.every((id) => first.has(id)), 120_000, async () => JSON.stringify(await db.sql`SELECT agent_id, status, reason, error, right(output_tail, 600) AS tail FROM executions WHERE agent_id IN ${db.sql(ids)} AND status <> 'succeeded'`));
      // the orchestrator's part: from the decision to its sandbox started (the execution running)
      const started = await db.sql<{ agent_id: string; started_at: Date }[]>`SELECT agent_id, started_at FROM executions WHERE agent_id IN ${db.sql(ids)}`;
      const launched = Float64Array.from(started.map((r) => r.started_at.getTime() - decidedWall.get(r.agent_id)!));
      rows.push({ variant: "decision → sandbox started (the orchestrator)", agents: n, summary: summarize(launched), allMs: round(Math.max(...started.map((r) => r.started_at.getTime())) - t0Wall) });
      const times = Float64Array.from(ids.map((id) => first.get(id)! - decided.get(id)!));
      rows.push({ variant: "decision → agent's first NATS message", agents: n, summary: summarize(times), allMs: round(Math.max(...ids.map((id) => first.get(id)!)) - t0) });
      log(`agents ${n}: floor p50 ${rows.at(-2)!.summary.p50} ms, first message p50 ${rows.at(-1)!.summary.p50} ms, p95 ${rows.at(-1)!.summary.p95} ms`);
      // let them finish (the default agent exits after one cycle) before the next size
      await waitUntil(async () => Number((await db.sql`SELECT count(*)::int AS n FROM executions WHERE agent_id IN ${db.sql(ids)} AND status IN ('pending', 'running')`)[0]!.n) === 0, 120_000);
      round_++;
    }
    await orch.close();
    await driver.close();
  } finally {
    for (const h of hooks.reverse()) await h().catch(() => {});
    rmSync(workspaces, { recursive: true, force: true });
  }
  const one = rows.find((r) => r.agents === 1 && r.variant.startsWith("decision → agent"));
  const many = [...rows].reverse().find((r) => r.variant.startsWith("decision → sandbox"));
  const manyFloor = rows.find((r) => r.agents === many?.agents && r.variant.startsWith("engine"));
  const targets = [
    ...(one ? [{ what: "one agent: decision → first message p95 < 1 s", verdict: verdictOf(one.summary.p95 < 1000), detail: `${one.summary.p95} ms` }] : []),
    ...(many && manyFloor && many.agents > 1
      ? [{ what: `${many.agents} agents: the orchestrator has all sandboxes started within 1.15 × the engine's floor`, verdict: verdictOf(many.allMs <= manyFloor.allMs * 1.15), detail: `${many.allMs} ms against a floor of ${manyFloor.allMs} ms (${round(many.allMs / manyFloor.allMs)} ×)` }]
      : []),
  ];
  return {
    name: "agents",
    natsVersion: version,
    options: { agent_counts: o.agentCounts },
    table: {
      headers: ["bench", "variant", "agents", "p50 ms", "p95 ms", "max ms", "all started ms"],
      rows: rows.map((r) => ["agents", r.variant, r.agents, r.summary.p50, r.summary.p95, r.summary.max, r.allMs]),
    },
    variants: rows.map((r) => ({ ...r })),
    targets,
    notes: ["floor: a container of the same image that runs `node -e 0`, no agent; decision: the allocation scheduled with its window open, so the launch starts at once"],
  };
}

async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs: number, why?: () => Promise<string>): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`not done within ${timeoutMs} ms${why ? `: ${await why()}` : ""}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
