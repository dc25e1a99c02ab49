import type { Assertion, Operators, Scenario, Where } from "./format.ts";
import { assertionName } from "./format.ts";

// Judging a run from its events: pure, so a live run and a replay of the same events give the same
// verdicts. Live state (balances by request, the ledger check) is passed in when there is one.

/** An audit event of the run, agent ids already un-prefixed. `t` is the envelope timestamp (ms since epoch). */
export type RunEvent = { seq: number; type: string; t: number; env: Record<string, unknown> };

export type Verdict = "pass" | "fail" | "not_replayable";

export type AssertionResult = {
  name: string;
  kind: Assertion["kind"];
  verdict: Verdict;
  /** What was expected, in words. */
  expected: string;
  /** What was seen: a value or a short description. */
  observed: string;
  /** The numeric value, for state and metrics. */
  value?: number | null;
  /** When it was decided, ms after the run's first event (null when nothing matched). */
  at_ms: number | null;
  message: string;
};

export type LiveState = {
  /** Balances read by request at the end of the run (un-prefixed agent id → credits; null = unknown agent). */
  balances?: Record<string, number | null>;
  /** The ledger check (economy/ledger.ts checkLedger), when a database connection was available. */
  ledger?: { ok: boolean; summary: string };
};

export type JudgeInput = {
  scenario: Scenario;
  /** Events whose correlation_id is the run id, oldest first. */
  events: RunEvent[];
  /** price_update and window_cleared events of any window (the runner passes those it saw). */
  market: RunEvent[];
  live?: LiveState;
};

const round6 = (x: number) => Math.round(x * 1e6) / 1e6;

export function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function checkOps(value: unknown, ops: Operators): string | null {
  for (const [op, want] of Object.entries(ops)) {
    if (want === undefined) continue;
    const num = typeof value === "number" ? value : NaN;
    const ok =
      op === "=" ? value === want
      : op === "!=" ? value !== want
      : op === "<" ? num < (want as number)
      : op === "<=" ? num <= (want as number)
      : op === ">" ? num > (want as number)
      : op === ">=" ? num >= (want as number)
      : op === "in" ? (want as unknown[]).includes(value)
      : op === "exists" ? (value !== undefined) === want
      : false;
    if (!ok) return `${op} ${JSON.stringify(want)}`;
  }
  return null;
}

function isOps(c: unknown): c is Operators {
  return c !== null && typeof c === "object";
}

/** Null when the event satisfies every constraint, else the first that failed. */
export function whereFails(env: Record<string, unknown>, where: Where | undefined): string | null {
  for (const [path, c] of Object.entries(where ?? {})) {
    const value = getPath(env, path);
    const failed = isOps(c) ? checkOps(value, c) : value === c ? null : `= ${JSON.stringify(c)}`;
    if (failed) return `${path} ${failed} (was ${JSON.stringify(value)})`;
  }
  return null;
}

export function describeWhere(where: Where | undefined): string {
  const parts = Object.entries(where ?? {}).map(([p, c]) =>
    isOps(c) ? Object.entries(c).filter(([, w]) => w !== undefined).map(([op, w]) => `${p} ${op} ${JSON.stringify(w)}`).join(", ") : `${p} = ${JSON.stringify(c)}`,
  );
  return parts.length ? ` where ${parts.join(", ")}` : "";
}

const describeOps = (ops: Operators) => Object.entries(ops).filter(([, w]) => w !== undefined).map(([op, w]) => `${op} ${JSON.stringify(w)}`).join(" and ");

const BID_TYPES = new Set(["bid_placed", "resources_allocated", "bundle_allocated", "bid_lost", "credits_burned"]);

/**
 * Each event id once, its first copy kept. An event may be on AUDIT twice — publishing is at least
 * once (the writer's flush and the outbox relay, a crash between publish and mark), and the stream
 * drops a repeated msg id only within its 2-minute duplicate window — so a count must not trust
 * the stream to have removed it.
 */
export function firstOfEachId<E extends Pick<RunEvent, "env">>(events: readonly E[]): E[] {
  const seen = new Set<string>();
  return events.filter((e) => {
    const id = e.env.id;
    if (typeof id !== "string") return true;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/** The run's events plus the market-wide ones (price_update, window_cleared) of the windows its bids took part in. */
export function attributed(input: Pick<JudgeInput, "events" | "market">): RunEvent[] {
  const windows = new Set<number>();
  for (const e of input.events) if (BID_TYPES.has(e.type)) windows.add(getPath(e.env, "payload.window_id") as number);
  const own = new Set(input.events.map((e) => e.seq));
  const market = input.market.filter((e) => !own.has(e.seq) && windows.has(getPath(e.env, "payload.window_id") as number));
  return firstOfEachId([...input.events, ...market].sort((a, b) => a.seq - b.seq));
}

type BalanceFlow = { recorded?: number; recordedSeq: number; flows: number };

/** Per agent: the last balance an event recorded, and what the credit movements add up to. */
export function balancesFromEvents(events: RunEvent[]): Map<string, BalanceFlow> {
  const out = new Map<string, BalanceFlow>();
  const at = (a: string) => {
    let b = out.get(a);
    if (!b) out.set(a, (b = { recordedSeq: -1, flows: 0 }));
    return b;
  };
  const record = (a: string, balance: number, seq: number) => {
    const b = at(a);
    if (seq >= b.recordedSeq) Object.assign(b, { recorded: balance, recordedSeq: seq });
  };
  for (const e of events) {
    const p = (e.env.payload ?? {}) as Record<string, number & string>;
    switch (e.type) {
      case "agent_spawned":
        at(p.agent_id);
        if (p.parent_id === null && p.credits === 0) record(p.agent_id, 0, e.seq);
        break;
      case "credits_minted":
        at(p.agent_id).flows += p.amount;
        record(p.agent_id, p.balance, e.seq);
        break;
      case "reward_granted":
        record(p.agent_id, p.balance, e.seq);
        break;
      case "credits_burned":
        at(p.agent_id).flows -= p.amount;
        record(p.agent_id, p.balance, e.seq);
        break;
      case "credits_transferred":
        at(p.from).flows -= p.amount;
        at(p.to).flows += p.amount;
        record(p.from, p.from_balance, e.seq);
        record(p.to, p.to_balance, e.seq);
        break;
    }
  }
  for (const b of out.values()) b.flows = round6(b.flows);
  return out;
}

function finalBalances(input: JudgeInput): Map<string, number> {
  const out = new Map<string, number>();
  for (const [a, b] of balancesFromEvents(input.events)) if (b.recorded !== undefined) out.set(a, b.recorded);
  for (const [a, v] of Object.entries(input.live?.balances ?? {})) if (v !== null) out.set(a, v);
  return out;
}

export function gini(xs: number[]): number {
  if (!xs.length) return 0;
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  if (mean === 0) return 0;
  let sum = 0;
  for (const a of xs) for (const b of xs) sum += Math.abs(a - b);
  return round6(sum / (2 * xs.length * xs.length * mean));
}

function priceSeries(all: RunEvent[], resource: string): { prices: number[]; last?: RunEvent } {
  const ups = all.filter((e) => e.type === "price_update" && getPath(e.env, "payload.resource") === resource);
  if (!ups.length) return { prices: [] };
  return { prices: [getPath(ups[0]!.env, "payload.previous_price") as number, ...ups.map((e) => getPath(e.env, "payload.price") as number)], last: ups.at(-1) };
}

/** Share of the allocated quantity that went to the highest-priced bids of the run (per window and resource). */
export function allocativeEfficiency(all: RunEvent[], resource?: string): number | null {
  const bids = new Map<string, { price: number; quantity: number; resource: string }>();
  for (const e of all) if (e.type === "bid_placed") bids.set(getPath(e.env, "payload.bid_id") as string, { price: getPath(e.env, "payload.price") as number, quantity: getPath(e.env, "payload.quantity") as number, resource: getPath(e.env, "payload.resource") as string });
  const groups = new Map<string, { id: string; won: boolean }[]>();
  for (const e of all) {
    if (e.type !== "resources_allocated" && e.type !== "bid_lost") continue;
    const id = getPath(e.env, "payload.bid_id") as string;
    const r = getPath(e.env, "payload.resource") as string;
    if (!bids.has(id) || (resource && r !== resource)) continue;
    const key = `${getPath(e.env, "payload.window_id")}/${r}`;
    (groups.get(key) ?? groups.set(key, []).get(key)!).push({ id, won: e.type === "resources_allocated" });
  }
  let allocated = 0;
  let toTop = 0;
  for (const g of groups.values()) {
    const a = g.filter((x) => x.won).reduce((s, x) => s + bids.get(x.id)!.quantity, 0);
    if (!a) continue;
    const sorted = [...g].sort((x, y) => bids.get(y.id)!.price - bids.get(x.id)!.price);
    const top = new Set<string>();
    let covered = 0;
    for (const x of sorted) {
      if (covered >= a) break;
      top.add(x.id);
      covered += bids.get(x.id)!.quantity;
    }
    allocated += a;
    toTop += g.filter((x) => x.won && top.has(x.id)).reduce((s, x) => s + bids.get(x.id)!.quantity, 0);
  }
  return allocated ? round6(toTop / allocated) : null;
}

function brief(e: RunEvent, t0: number): string {
  return `${e.type}@${e.t - t0}ms ${JSON.stringify(e.env.payload)}`;
}

/** Judges every assertion of the scenario over the run's events (and live state when given); each event id counts once. */
export function judge(given: JudgeInput): AssertionResult[] {
  const input = { ...given, events: firstOfEachId(given.events), market: firstOfEachId(given.market) };
  const all = attributed(input);
  const t0 = input.events.length ? Math.min(...input.events.map((e) => e.t)) : NaN;
  const rel = (e: RunEvent) => e.t - t0;
  return input.scenario.assertions.map((a, i) => {
    const base = { name: assertionName(a, i), kind: a.kind };
    const res = (r: Omit<AssertionResult, "name" | "kind">): AssertionResult => ({ ...base, ...r });
    switch (a.kind) {
      case "exists": {
        const expected = `${a.type}${describeWhere(a.where)} within ${a.within_ms} ms${a.count ? `, count ${describeOps(a.count)}` : ""}`;
        const ofType = all.filter((e) => e.type === a.type);
        const matching = ofType.filter((e) => !whereFails(e.env, a.where));
        const inTime = matching.filter((e) => rel(e) <= a.within_ms);
        const countOk = a.count ? !checkOps(inTime.length, a.count) : inTime.length >= 1;
        const observed = `${inTime.length} in time${matching.length > inTime.length ? `, ${matching.length - inTime.length} later (first at ${rel(matching[inTime.length]!)} ms)` : ""}`;
        if (countOk) return res({ verdict: "pass", expected, observed, value: inTime.length, at_ms: inTime.length ? rel(inTime.at(-1)!) : null, message: `saw ${observed}` });
        const near = ofType.slice(0, 3).map((e) => `${brief(e, t0)}${whereFails(e.env, a.where) ? ` [${whereFails(e.env, a.where)}]` : ""}`);
        return res({ verdict: "fail", expected, observed, value: inTime.length, at_ms: null, message: `expected ${expected}; saw ${observed}${ofType.length ? `; ${a.type} events seen: ${near.join("; ")}` : `; no ${a.type} event at all (types seen: ${[...new Set(all.map((e) => e.type))].join(", ") || "none"})`}` });
      }
      case "sequence": {
        const expected = `${a.steps.map((s) => `${s.type}${describeWhere(s.where)}`).join(" → ")} with gaps ≤ ${a.max_gap_ms} ms${a.within_ms ? `, done within ${a.within_ms} ms` : ""}`;
        let best: RunEvent[] = [];
        for (const first of all.filter((e) => e.type === a.steps[0]!.type && !whereFails(e.env, a.steps[0]!.where))) {
          const chain = [first];
          for (const step of a.steps.slice(1)) {
            const prev = chain.at(-1)!;
            const next = all.find((e) => e.seq > prev.seq && e.type === step.type && !whereFails(e.env, step.where) && e.t - prev.t <= a.max_gap_ms);
            if (!next) break;
            chain.push(next);
          }
          const done = chain.length === a.steps.length && (!a.within_ms || rel(chain.at(-1)!) <= a.within_ms);
          if (done) {
            const gaps = chain.slice(1).map((e, k) => e.t - chain[k]!.t);
            return res({ verdict: "pass", expected, observed: `${chain.map((e) => `${e.type}@${rel(e)}ms`).join(" → ")}`, at_ms: rel(chain.at(-1)!), message: `gaps ${gaps.join(", ")} ms` });
          }
          if (chain.length > best.length) best = chain;
        }
        const stuck = a.steps[best.length] ?? a.steps.at(-1)!;
        const observed = best.length ? `reached ${best.map((e) => `${e.type}@${rel(e)}ms`).join(" → ")}` : `no ${a.steps[0]!.type}${describeWhere(a.steps[0]!.where)}`;
        const why = best.length === a.steps.length ? `the chain ended after ${a.within_ms} ms` : best.length ? `no ${stuck.type}${describeWhere(stuck.where)} within ${a.max_gap_ms} ms after ${best.at(-1)!.type}@${rel(best.at(-1)!)}ms` : `no ${stuck.type}${describeWhere(stuck.where)} at all`;
        return res({ verdict: "fail", expected, observed, at_ms: null, message: `expected ${expected}; ${why}` });
      }
      case "never": {
        const expected = `no ${a.type}${describeWhere(a.where)} during the run`;
        const hit = all.find((e) => e.type === a.type && !whereFails(e.env, a.where));
        if (!hit) return res({ verdict: "pass", expected, observed: "none", at_ms: null, message: `${all.length} events, none matching` });
        return res({ verdict: "fail", expected, observed: brief(hit, t0), at_ms: rel(hit), message: `expected ${expected}; saw ${brief(hit, t0)}` });
      }
      case "state": {
        const target = a.of === "balance" ? `balance of ${a.agent}` : `price of ${a.resource}`;
        const want = [a.equals !== undefined ? `= ${a.equals}${a.tolerance ? ` ± ${a.tolerance}` : ""}` : "", a.min !== undefined ? `≥ ${a.min}` : "", a.max !== undefined ? `≤ ${a.max}` : ""].filter(Boolean).join(", ");
        const expected = `${target} ${want}${a.after ? ` after ${a.after.type}${describeWhere(a.after.where)}` : ""}`;
        let from = -1;
        let at: number | null = null;
        if (a.after) {
          const ev = all.find((e) => e.type === a.after!.type && !whereFails(e.env, a.after!.where));
          if (!ev) return res({ verdict: "fail", expected, observed: `no ${a.after.type}`, value: null, at_ms: null, message: `expected ${expected}; the event it follows never came (no ${a.after.type}${describeWhere(a.after.where)})` });
          from = ev.seq;
          at = rel(ev);
        }
        let value: number | undefined;
        let source = "";
        if (a.of === "balance") {
          const live = input.live?.balances?.[a.agent!];
          if (live !== undefined && live !== null) [value, source] = [live, "economic.balance request at the end of the run"];
          else {
            const rec = balancesFromEvents(input.events).get(a.agent!);
            if (rec?.recorded !== undefined) [value, source] = [rec.recorded, `last balance recorded in the events (seq ${rec.recordedSeq})`];
          }
        } else {
          const ups = all.filter((e) => e.type === "price_update" && getPath(e.env, "payload.resource") === a.resource);
          const ev = ups.filter((e) => e.seq >= from).at(-1) ?? ups.at(-1);
          if (ev) [value, source] = [getPath(ev.env, "payload.price") as number, `price_update of window ${getPath(ev.env, "payload.window_id")}`];
        }
        if (value === undefined) return res({ verdict: "fail", expected, observed: "unknown", value: null, at_ms: at, message: `expected ${expected}; nothing recorded a ${target}` });
        const tol = a.tolerance ?? 1e-9;
        const ok = (a.equals === undefined || Math.abs(value - a.equals) <= tol) && (a.min === undefined || value >= a.min) && (a.max === undefined || value <= a.max);
        return res({ verdict: ok ? "pass" : "fail", expected, observed: String(value), value, at_ms: at, message: ok ? `from ${source}` : `expected ${expected}; saw ${value} (${source})` });
      }
      case "invariants": {
        const checks = a.checks ?? ["conservation", "non_negative"];
        const expected = checks.map((c) => (c === "conservation" ? "credits conserved" : "no negative balance")).join(", ");
        const problems: string[] = [];
        const notes: string[] = [];
        const flows = balancesFromEvents(input.events);
        const finals = finalBalances(input);
        if (checks.includes("conservation")) {
          for (const [agent, b] of flows) {
            if (b.recorded !== undefined && Math.abs(b.recorded - b.flows) > 1e-6) problems.push(`${agent}: balance ${b.recorded} ≠ minted + transfers − burned = ${b.flows}`);
            const live = input.live?.balances?.[agent];
            if (live !== undefined && live !== null && Math.abs(live - b.flows) > 1e-6) problems.push(`${agent}: balance by request ${live} ≠ minted + transfers − burned = ${b.flows}`);
          }
          notes.push(`${flows.size} agents balanced from their events`);
        }
        if (checks.includes("non_negative")) for (const [agent, v] of finals) if (v < 0) problems.push(`${agent}: negative balance ${v}`);
        if (input.live?.ledger) {
          notes.push(`checkLedger: ${input.live.ledger.summary}`);
          if (!input.live.ledger.ok) problems.push(`checkLedger failed: ${input.live.ledger.summary}`);
        } else notes.push("checkLedger not run (no database connection, or a replay)");
        if (problems.length) return res({ verdict: "fail", expected, observed: problems.join("; "), at_ms: null, message: `expected ${expected}; ${problems.join("; ")}` });
        return res({ verdict: "pass", expected, observed: "hold", at_ms: null, message: notes.join("; ") });
      }
      case "metrics": {
        let value: number | null = null;
        const resource = a.resource ?? "cpu";
        if (a.metric === "gini") value = finals(input);
        else if (a.metric === "allocative_efficiency") value = allocativeEfficiency(all, a.resource);
        else {
          const { prices } = priceSeries(all, resource);
          if (prices.length >= 2) {
            if (a.metric === "price_change") value = round6((prices.at(-1)! - prices[0]!) / prices[0]!);
            else {
              const base = prices[Math.max(0, prices.length - 1 - (a.k ?? 3))]!;
              value = round6(Math.abs(prices.at(-1)! - base) / base);
            }
          }
        }
        const expected = a.bound ? `${a.metric} ${describeOps(a.bound)}` : `${a.metric} (reported)`;
        if (!a.bound) return res({ verdict: "pass", expected, observed: String(value), value, at_ms: null, message: "reported, no bound" });
        const failed = value === null ? "no value (no data in the run)" : checkOps(value, a.bound);
        return res({ verdict: failed ? "fail" : "pass", expected, observed: String(value), value, at_ms: null, message: failed ? `expected ${expected}; saw ${value}` : `within bound` });
      }
    }
  });
}

function finals(input: JudgeInput): number {
  return gini([...finalBalances(input).values()]);
}

/** Whether an assertion can only be judged once the run is over (never, state, invariants, metrics). */
export function isPositive(a: Assertion): boolean {
  return a.kind === "exists" || a.kind === "sequence";
}
