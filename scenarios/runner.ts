import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, headers as natsHeaders, nuid, type NatsConnection } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { ScenarioError, ScenarioErrorCode, type Scenario, type Stimulus } from "./format.ts";
import { isPositive, judge, type AssertionResult, type LiveState, type RunEvent } from "./judge.ts";
import { natsConnectOptions } from "../host/configFile.ts";

// Runs a scenario against a stack (NATS + the economy's functions): setup agents, send the stimuli
// the way the NATS CLI would (plain JSON, a correlation header), watch the AUDIT stream, judge.
// A replay judges a past run from the AUDIT stream only, with the same judge.

export const ROOT = resolve(import.meta.dirname, "..");
const MARKET_TYPES = new Set(["price_update", "window_cleared"]);
const CORRELATION = "Syntropism-Correlation-Id";
const SENDER = "Syntropism-Sender";

export type Report = {
  scenario: string;
  purpose: string;
  mode: "live" | "replay";
  run_id: string;
  /** The prefix the run gave its agent ids (`<tag>_alice`). */
  tag: string;
  started_at: string;
  duration_ms: number;
  passed: boolean;
  timed_out: boolean;
  events: number;
  event_types: Record<string, number>;
  stimuli: { at_ms: number; kind: string; subject: string; reply?: unknown }[];
  balances?: Record<string, number | null>;
  ledger?: LiveState["ledger"];
  assertions: AssertionResult[];
};

export type RunOptions = {
  natsUrl: string;
  /** The runner's credentials file (the `scenario` identity) on a server with authentication. */
  creds?: string;
  /** When set, the invariants also run checkLedger on this database. */
  databaseUrl?: string;
  /** Default `<name>-<nuid>`. */
  runId?: string;
  progress?: (line: string) => void;
};

/** A run's agent-id prefix, derived from its id (so a replay finds it again). */
export function runTag(runId: string): string {
  return `r${runId.replace(/[^A-Za-z0-9]/g, "").slice(-5).toLowerCase()}`;
}

function declaredIds(s: Scenario): string[] {
  return [...s.setup.agents.map((a) => a.id), ...(s.setup.spawned ?? [])];
}

function mapStrings(x: unknown, f: (s: string) => string): unknown {
  if (typeof x === "string") return f(x);
  if (Array.isArray(x)) return x.map((y) => mapStrings(y, f));
  if (x && typeof x === "object") return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, mapStrings(v, f)]));
  return x;
}

export function prefixer(s: Scenario, tag: string) {
  const ids = new Set(declaredIds(s));
  const p = `${tag}_`;
  const id = (a: string) => (ids.has(a) ? p + a : a);
  return {
    id,
    subject: (subject: string) => subject.split(".").map(id).join("."),
    body: (body: unknown) => mapStrings(body, id),
    /** Un-prefixes whatever the run's events say about its agents. */
    strip: (x: unknown) => mapStrings(x, (str) => (str.startsWith(p) ? str.slice(p.length) : str)),
  };
}

function toRunEvent(m: JsMsg, strip: (x: unknown) => unknown): RunEvent & { correlation_id: string } {
  const env = m.json<Record<string, unknown>>();
  return {
    seq: m.seq,
    type: String(env.type),
    t: Date.parse(String(env.timestamp)),
    correlation_id: String(env.correlation_id),
    env: { ...env, to: strip(env.to), payload: strip(env.payload) },
  };
}

/** True the first time `id` is seen. */
function firstSight(seen: Set<string>, id: string): boolean {
  if (seen.has(id)) return false;
  seen.add(id);
  return true;
}

function encode(body: unknown): string {
  if (body === undefined) return "";
  return typeof body === "string" ? body : JSON.stringify(body);
}

async function request(nc: NatsConnection, subject: string, body: string, hdrs?: ReturnType<typeof natsHeaders>): Promise<{ ok: boolean; code?: string; body: unknown }> {
  const m = await nc.request(subject, body, { timeout: 5000, headers: hdrs });
  const code = m.headers?.get("Nats-Service-Error-Code") || undefined;
  let parsed: unknown = m.string();
  try {
    parsed = m.json();
  } catch {
    // not JSON: keep the text
  }
  return { ok: !code, code, body: parsed };
}

function summarize(s: Scenario, run: { runId: string; tag: string; mode: Report["mode"]; startedAt: number; timedOut: boolean; events: RunEvent[]; stimuli: Report["stimuli"]; live?: LiveState; assertions: AssertionResult[] }): Report {
  const types: Record<string, number> = {};
  for (const e of run.events) types[e.type] = (types[e.type] ?? 0) + 1;
  return {
    scenario: s.name,
    purpose: s.purpose,
    mode: run.mode,
    run_id: run.runId,
    tag: run.tag,
    started_at: new Date(run.startedAt).toISOString(),
    duration_ms: Date.now() - run.startedAt,
    passed: run.assertions.every((a) => a.verdict !== "fail"),
    timed_out: run.timedOut,
    events: run.events.length,
    event_types: types,
    stimuli: run.stimuli,
    ...(run.live?.balances ? { balances: run.live.balances } : {}),
    ...(run.live?.ledger ? { ledger: run.live.ledger } : {}),
    assertions: run.assertions,
  };
}

/** Runs one scenario against the stack at `natsUrl`; every wait is bounded by the scenario's timeout_ms. */
export async function runScenario(s: Scenario, opts: RunOptions): Promise<Report> {
  const startedAt = Date.now();
  const hardEnd = startedAt + s.timeout_ms;
  const runId = opts.runId ?? `${s.name}-${nuid.next()}`;
  const tag = runTag(runId);
  const px = prefixer(s, tag);
  const say = (line: string) => opts.progress?.(`[${String(Date.now() - startedAt).padStart(6)} ms] ${line}`);
  const nc = await connect({ servers: opts.natsUrl, ...natsConnectOptions(opts), name: `scenario ${runId}` });
  const js = jetstream(nc);
  const events: RunEvent[] = [];
  const market: RunEvent[] = [];
  const stimuli: Report["stimuli"] = [];
  let timedOut = false;
  const hdrs = (as?: string) => {
    const h = natsHeaders();
    h.set(CORRELATION, runId);
    if (as) h.set(SENDER, px.id(as));
    return h;
  };
  const remaining = () => Math.max(0, hardEnd - Date.now());
  say(`run ${runId} (agents prefixed ${tag}_)`);
  const consumer = await js.consumers.get("AUDIT", { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(startedAt - 2000).toISOString() });
  const messages = await consumer.consume();
  // an event stored twice (published again after the stream's duplicate window) counts once
  const seen = new Set<string>();
  const watching = (async () => {
    for await (const m of messages) {
      const env = m.json<{ id?: string; correlation_id?: string; type?: string }>();
      if (typeof env.id === "string" && !firstSight(seen, env.id)) continue;
      if (env.correlation_id === runId) {
        const e = toRunEvent(m, px.strip);
        events.push(e);
        say(`event ${e.type} ${JSON.stringify(e.env.payload)}`);
      } else if (MARKET_TYPES.has(String(env.type))) market.push(toRunEvent(m, px.strip));
    }
  })();
  try {
    // setup: genesis agents first, then children spawned by their parents
    const exists = async (agent: string) => {
      while (remaining() > 0) {
        const r = await request(nc, `economic.balance.${px.id(agent)}`, "").catch(() => ({ ok: false }));
        if (r.ok) return true;
        await sleep(50);
      }
      return false;
    };
    const roots = s.setup.agents.filter((a) => !a.parent);
    for (const a of roots) {
      nc.publish("admin.genesis", JSON.stringify({ agent_id: px.id(a.id), credits: a.credits }), { headers: hdrs() });
      say(`setup: genesis ${a.id} with ${a.credits} credits`);
    }
    for (const a of roots) if (!(await exists(a.id))) throw new ScenarioError(ScenarioErrorCode.Setup, `setup: agent ${a.id} did not appear within the timeout`);
    for (const a of s.setup.agents.filter((x) => x.parent)) {
      nc.publish(`economic.spawn.${px.id(a.parent!)}`, JSON.stringify({ child_id: px.id(a.id), credits: a.credits }), { headers: hdrs() });
      say(`setup: ${a.parent} spawns ${a.id} with ${a.credits} credits`);
      if (!(await exists(a.id))) throw new ScenarioError(ScenarioErrorCode.Setup, `setup: agent ${a.id} did not appear within the timeout`);
    }

    if (s.setup.quotas) {
      const { Kvm } = await import("@nats-io/kv");
      const quotas = await new Kvm(nc).open("mcp_quotas");
      for (const [agent, q] of Object.entries(s.setup.quotas)) {
        await quotas.put(px.id(agent), JSON.stringify(q));
        say(`setup: ${agent} may make ${q.max_mcp_calls_per_hour} MCP calls per hour`);
      }
    }

    // stimuli, each at its time after the start of the next market window (so that stimuli with
    // the same at_ms fall into the same window)
    const w = s.window_ms;
    const t1 = (Math.floor(Date.now() / w) + 1) * w + Math.min(50, Math.floor(w / 8));
    await sleep(Math.min(Math.max(0, t1 - Date.now()), remaining()));
    const ordered = [...s.stimuli].sort((a, b) => a.at_ms - b.at_ms);
    const sends: Promise<void>[] = [];
    for (const st of ordered) {
      const wait = t1 + st.at_ms - Date.now();
      if (wait > 0) await sleep(Math.min(wait, remaining()));
      if (!remaining()) break;
      sends.push(sendStimulus(nc, st, px, hdrs(st.as), stimuli, Date.now() - t1, say));
    }
    await Promise.all(sends);
    await nc.flush();

    // watch until every exists/sequence holds and the market has settled, or nothing more can change
    const lastStimulus = t1 + (ordered.at(-1)?.at_ms ?? 0);
    const minEnd = lastStimulus + (s.settle_ms ?? 2 * s.window_ms + 200);
    const positives = s.assertions.filter(isPositive);
    const withinOf = (a: (typeof positives)[number]) => (a.kind === "exists" || a.kind === "sequence" ? a.within_ms : undefined);
    const bounded = positives.every((a) => withinOf(a) !== undefined);
    const horizon = Math.max(0, ...positives.map((a) => withinOf(a) ?? 0));
    for (;;) {
      const now = Date.now();
      if (now >= hardEnd) {
        timedOut = positives.length > 0;
        break;
      }
      if (now >= minEnd) {
        const verdicts = judge({ scenario: { ...s, assertions: positives }, events, market });
        if (verdicts.every((v) => v.verdict === "pass")) break;
        const t0 = events.length ? Math.min(...events.map((e) => e.t)) : startedAt;
        if (bounded && now >= t0 + horizon + 500) break;
      }
      await sleep(100);
    }

    // live state: balances by request, the ledger check when a database is reachable
    const live: LiveState = { balances: {} };
    for (const a of declaredIds(s)) {
      const r = await request(nc, `economic.balance.${px.id(a)}`, "").catch(() => ({ ok: false, body: null }));
      live.balances![a] = r.ok ? ((r.body as { balance: number }).balance ?? null) : null;
    }
    if (opts.databaseUrl) live.ledger = await ledgerCheck(opts.databaseUrl);
    say(`judging ${events.length} events of the run`);
    const assertions = judge({ scenario: s, events, market, live });
    return summarize(s, { runId, tag, mode: "live", startedAt, timedOut, events, stimuli, live, assertions });
  } finally {
    messages.stop();
    await watching.catch(() => {});
    await nc.drain().catch(() => {});
  }
}

async function sendStimulus(nc: NatsConnection, st: Stimulus, px: ReturnType<typeof prefixer>, h: ReturnType<typeof natsHeaders>, out: Report["stimuli"], at: number, say: (l: string) => void): Promise<void> {
  const subject = px.subject(st.subject);
  const body = encode(px.body(st.body));
  if (st.kind === "publish") {
    nc.publish(subject, body, { headers: h });
    out.push({ at_ms: at, kind: st.kind, subject: st.subject });
    say(`publish ${st.subject} ${encode(st.body)}`);
    return;
  }
  const r = await request(nc, subject, body, h).catch((err: Error) => ({ ok: false, code: "NO_REPLY", body: err.message }));
  const reply = px.strip(r.body);
  out.push({ at_ms: at, kind: st.kind, subject: st.subject, reply });
  say(`request ${st.subject} → ${r.ok ? "" : `error ${r.code} `}${JSON.stringify(reply)}`);
}

async function ledgerCheck(url: string): Promise<LiveState["ledger"]> {
  const { connect: connectDb } = await import("../economy/db.ts");
  const { checkLedger } = await import("../economy/ledger.ts");
  const sql = connectDb(url, { max: 2, applicationName: "syntropism-scenario" });
  try {
    const c = await checkLedger(sql);
    const problems = [c.negative.length && `${c.negative.length} negative`, c.unbalancedTx.length && `${c.unbalancedTx.length} unbalanced`, c.drift.length && `${c.drift.length} drifted`, c.overReserved.length && `${c.overReserved.length} over-reserved`, c.totalAgents !== c.expected && "Σ balances ≠ genesis + minted − burned", c.totalAll !== 0n && "Σ accounts ≠ 0"].filter(Boolean);
    return { ok: c.ok, summary: `${c.ok ? "ok" : "FAILED"}: ${c.agents} agents, ${c.transactions} transactions, Σ balances ${c.totalAgents} µ = expected ${c.expected} µ${problems.length ? `; ${problems.join(", ")}` : ""}` };
  } catch (err) {
    return { ok: false, summary: `could not run: ${(err as Error).message}` };
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {});
  }
}

/** Re-judges a past run from the AUDIT stream only. */
export async function replayScenario(s: Scenario, runId: string, opts: { natsUrl: string; creds?: string; progress?: (line: string) => void }): Promise<Report> {
  const startedAt = Date.now();
  const tag = runTag(runId);
  const px = prefixer(s, tag);
  const nc = await connect({ servers: opts.natsUrl, ...natsConnectOptions(opts), name: `scenario replay ${runId}` });
  try {
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info("AUDIT");
    const events: RunEvent[] = [];
    const market: RunEvent[] = [];
    if (info.state.messages > 0) {
      const consumer = await js.consumers.get("AUDIT", { deliver_policy: DeliverPolicy.All });
      const last = info.state.last_seq;
      const messages = await consumer.consume();
      const timer = setTimeout(() => messages.stop(), 60_000);
      const seen = new Set<string>();
      for await (const m of messages) {
        const env = m.json<{ id?: string; correlation_id?: string; type?: string }>();
        if (typeof env.id === "string" && !firstSight(seen, env.id)) {
          if (m.seq >= last || m.info.pending === 0) break;
          continue;
        }
        if (env.correlation_id === runId) events.push(toRunEvent(m, px.strip));
        else if (MARKET_TYPES.has(String(env.type))) market.push(toRunEvent(m, px.strip));
        if (m.seq >= last || m.info.pending === 0) break;
      }
      clearTimeout(timer);
      messages.stop();
    }
    opts.progress?.(`replay ${runId}: ${events.length} events of the run in AUDIT (${info.state.messages} in the stream)`);
    if (!events.length) throw new ScenarioError(ScenarioErrorCode.RunNotFound, `no event in AUDIT has correlation_id ${runId}`);
    const assertions = judge({ scenario: s, events, market }).map((a) =>
      a.kind === "state" && a.observed === "unknown" ? { ...a, verdict: "not_replayable" as const, message: `not replayable: ${a.message}` } : a,
    );
    return summarize(s, { runId, tag, mode: "replay", startedAt, timedOut: false, events, stimuli: [], assertions });
  } finally {
    await nc.drain().catch(() => {});
  }
}

export type Stack = { natsUrl: string; databaseUrl: string; /** The runner's credentials on this stack's server. */ creds: string; stop(): Promise<void> };

/**
 * Starts the economy in this process, as `npm start` does but throw-away: a nats-server with a
 * temporary store, PostgreSQL (DATABASE_URL, else an embedded one in a temporary directory), and a
 * Host on functions/ with streams.config.ts. The scenario's window and market are the host's
 * settings (the economy seeds the market only when it has no rows yet).
 */
export async function startStack(s: Scenario, log: (line: string) => void = () => {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), "syntropism-scenario-"));
  chmodSync(dir, 0o755); // as root, the embedded PostgreSQL runs as an unprivileged user
  const stops: (() => Promise<void>)[] = [async () => rmSync(dir, { recursive: true, force: true })];
  const stop = async () => {
    for (const f of stops.splice(0).reverse()) await f().catch(() => {});
  };
  try {
    const { loadSettings } = await import("../config/settings.ts");
    const { openDatabase } = await import("../economy/db.ts");
    const db = await openDatabase({ url: loadSettings().economy.databaseUrl, dataDir: join(dir, "pg"), log });
    stops.push(() => db.close());
    const overrides = { DATABASE_URL: db.url, ECONOMY_WINDOW_MS: String(s.window_ms), ...(s.setup.market ? { ECONOMY_MARKET: JSON.stringify(s.setup.market) } : {}) };
    const settings = loadSettings({ LOG_LEVEL: "warn", ...process.env, ...overrides });
    const { ensureNatsServer, startNatsServer } = await import("../host/natsServer.ts");
    // with authentication, as `npm start`: the host as the service, the runner as `scenario`
    const { Authority } = await import("../auth/authority.ts");
    const authority = await Authority.open(join(dir, "auth"), { create: true });
    const nats = await startNatsServer({ binary: ensureNatsServer(log), storeDir: join(dir, "nats"), args: ["-c", authority.serverConfigFile()] });
    stops.push(() => nats.stop());
    const { loadConfigFile } = await import("../host/configFile.ts");
    const { createLogger } = await import("../host/log.ts");
    const { Host } = await import("../host/runtime.ts");
    const host = new Host({
      settings,
      servers: nats.url,
      ...natsConnectOptions({ creds: authority.credsFile("service") }),
      functionsDir: resolve(ROOT, "functions"),
      config: await loadConfigFile(resolve(ROOT, "streams.config.ts")),
      onDrift: "apply",
      graceMs: 3000,
      log: createLogger({ level: settings.log.level, sink: (l) => process.stderr.write(`${l}\n`) }),
    });
    stops.push(() => host.stop());
    await host.start();
    log(`stack: nats ${nats.url}, PostgreSQL ${db.embedded ? "embedded (temporary)" : "from DATABASE_URL"}, window ${s.window_ms} ms`);
    return { natsUrl: nats.url, databaseUrl: db.url, creds: authority.credsFile("scenario"), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

// ---- output ----

function cut(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

export function formatTable(r: Report): string {
  const rows = r.assertions.map((a) => [a.name, a.verdict.toUpperCase(), cut(a.observed, 60), a.at_ms === null ? "—" : `${a.at_ms} ms`]);
  const head = ["assertion", "verdict", "observed", "time"];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(width[i]!)).join("  ").trimEnd();
  const out = [`${r.scenario} (${r.mode} ${r.run_id}) — ${r.purpose}`, line(head), line(width.map((w) => "─".repeat(w))), ...rows.map(line)];
  for (const a of r.assertions) if (a.verdict === "fail") out.push(`  ✗ ${a.name}: ${a.message}`);
  out.push(`${r.passed ? "PASSED" : "FAILED"}: ${r.assertions.filter((a) => a.verdict === "pass").length}/${r.assertions.length} assertions, ${r.events} events, ${r.duration_ms} ms${r.timed_out ? " (timed out)" : ""}`);
  return `${out.join("\n")}\n`;
}

const xml = (s: string) => s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);

export function junitXml(reports: Report[]): string {
  const suites = reports.map((r) => {
    const cases = r.assertions.map((a) => {
      const inner = a.verdict === "fail" ? `<failure message="${xml(a.message)}" type="${a.kind}">${xml(`expected: ${a.expected}\nobserved: ${a.observed}`)}</failure>` : a.verdict === "not_replayable" ? `<skipped message="${xml(a.message)}"/>` : "";
      return `    <testcase classname="scenario.${xml(r.scenario)}" name="${xml(a.name)}" time="${((a.at_ms ?? 0) / 1000).toFixed(3)}">${inner}</testcase>`;
    });
    const failures = r.assertions.filter((a) => a.verdict === "fail").length;
    const skipped = r.assertions.filter((a) => a.verdict === "not_replayable").length;
    return `  <testsuite name="${xml(r.scenario)}" id="${xml(r.run_id)}" tests="${r.assertions.length}" failures="${failures}" skipped="${skipped}" time="${(r.duration_ms / 1000).toFixed(3)}" timestamp="${r.started_at}">\n${cases.join("\n")}\n  </testsuite>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n${suites.join("\n")}\n</testsuites>\n`;
}
