// The genesis agent's decision policy of the local LLM server (docs/llm.md, "Decisions"). An agent
// that asks the local model what to do next sends its state — what env.json holds: agent_id,
// credits, prices, limits, window_end, and an optional goal — and gets back a decision it can act
// on at once: a bundle bid it can afford and that the market accepts (its price covers what the
// bundle costs at current prices), or a reason to wait. The policy is simple on purpose, so that
// tests and the demo can predict it; the seed only moves the margin within a documented range.

export type AgentState = {
  agent_id: string;
  credits: number;
  prices: Record<string, number>;
  window_end?: string;
  limits?: { memoryMiB?: number; cpuMillicores?: number };
  goal?: string;
};

export type Decision =
  | { action: "bid"; bundle: { cpu: number; memory: number }; price: number; reason: string }
  | { action: "wait"; reason: string };

/** Bundles the policy chooses from, smallest first: cpu in millicores, memory in MiB. */
export const BUNDLES: readonly { cpu: number; memory: number }[] = [
  { cpu: 250, memory: 64 },
  { cpu: 500, memory: 128 },
  { cpu: 1000, memory: 256 },
  { cpu: 2000, memory: 512 },
];

/** Share of the credits one window's bid may spend. */
export const BUDGET_SHARE = 0.25;
/** The bid's price is the bundle's cost at current prices × a margin in [MARGIN_MIN, MARGIN_MAX), chosen by the seed. */
export const MARGIN_MIN = 1.1;
export const MARGIN_MAX = 1.3;

/** The market takes amounts with at most six decimals; a price is rounded up so that it still covers the cost. */
const ceil6 = (x: number): number => Math.ceil(x * 1e6 - 1e-6) / 1e6;

/** An agent state when `value` looks like one (agent_id, credits, prices with cpu and memory), else undefined. */
export function asAgentState(value: unknown): AgentState | undefined {
  if (!value || typeof value !== "object" || Array.isArray(value)) return undefined;
  const o = value as Record<string, unknown>;
  if (typeof o.agent_id !== "string" || typeof o.credits !== "number" || !Number.isFinite(o.credits)) return undefined;
  const p = o.prices as Record<string, unknown> | undefined;
  if (!p || typeof p !== "object" || typeof p.cpu !== "number" || typeof p.memory !== "number") return undefined;
  if (!(p.cpu >= 0) || !(p.memory >= 0)) return undefined;
  return o as unknown as AgentState;
}

/**
 * The decision for `state`: the largest bundle of BUNDLES whose price — cost at current prices
 * (Σ quantity × price) × the seed's margin, rounded up to six decimals — fits in BUDGET_SHARE of the
 * credits; `wait` when not even the smallest does. `random` is a number in [0, 1) from the seed.
 */
export function decide(state: AgentState, random: number): Decision {
  const margin = MARGIN_MIN + (MARGIN_MAX - MARGIN_MIN) * random;
  const budget = state.credits * BUDGET_SHARE;
  const goal = state.goal ? ` towards "${state.goal}"` : "";
  let best: { cpu: number; memory: number; price: number; cost: number } | undefined;
  for (const b of BUNDLES) {
    const cost = b.cpu * state.prices.cpu! + b.memory * state.prices.memory!;
    const price = ceil6(cost * margin);
    if (price > 0 && price <= budget) best = { ...b, price, cost };
  }
  if (!best) {
    const b = BUNDLES[0]!;
    const cost = b.cpu * state.prices.cpu! + b.memory * state.prices.memory!;
    return {
      action: "wait",
      reason: `${state.agent_id} has ${state.credits} credits; the smallest bundle (cpu ${b.cpu}, memory ${b.memory}) costs ${ceil6(cost)} at current prices, ${ceil6(cost * margin)} with the margin, more than ${Math.round(BUDGET_SHARE * 100)}% of the credits`,
    };
  }
  return {
    action: "bid",
    bundle: { cpu: best.cpu, memory: best.memory },
    price: best.price,
    reason: `${state.agent_id}: bundle costs ${ceil6(best.cost)} at current prices; bidding ×${margin.toFixed(3)} within ${Math.round(BUDGET_SHARE * 100)}% of ${state.credits} credits${goal}`,
  };
}

/** The first JSON object in `text` that is an agent state (objects found by balanced braces, strings respected). */
export function findAgentState(text: string): AgentState | undefined {
  for (let start = text.indexOf("{"); start !== -1; start = text.indexOf("{", start + 1)) {
    const end = matchingBrace(text, start);
    if (end === -1) continue;
    try {
      const state = asAgentState(JSON.parse(text.slice(start, end + 1)));
      if (state) return state;
    } catch {
      // not JSON from this brace; try the next one
    }
  }
  return undefined;
}

function matchingBrace(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return i;
  }
  return -1;
}
