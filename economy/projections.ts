import type { KV } from "@nats-io/kv";
import type { Sql } from "./db.ts";
import { toCredits } from "./money.ts";

// Read models in KV, written after each commit: `agent_state` (one key per agent) and
// `market_prices` (one key per resource). The ledger is the truth; these can be rebuilt from it
// at any time (`npm run economy -- projections rebuild`). Agents read KV, and fall back to a request.

export const AGENT_STATE = "agent_state";
export const MARKET_PRICES = "market_prices";

export type AgentState = { agent_id: string; balance: number; reserved: number; available: number; status: string; parent_id: string | null; updated_at: string };
export type PriceState = { resource: string; price: number; floor: number; supply: number; utilization: number; window_id: number | null; updated_at: string };

export async function projectAgents(kv: KV, sql: Sql, agentIds: Iterable<string>): Promise<void> {
  const ids = [...new Set(agentIds)];
  if (!ids.length) return;
  // one query for the whole group: balance, what open bids reserve, lineage
  const rows = await sql<{ id: string; status: string; parent_id: string | null; balance: bigint; reserved: bigint }[]>`
    SELECT a.id, a.status, a.parent_id, acc.balance,
           coalesce((SELECT sum(b.amount) FROM bids b WHERE b.agent_id = a.id AND b.status = 'open'), 0)::bigint AS reserved
      FROM agents a JOIN accounts acc ON acc.id = 'agent:' || a.id
     WHERE a.id = ANY(${ids}::text[])`;
  const at = new Date().toISOString();
  await Promise.all(
    rows.map((a) => {
      const state: AgentState = {
        agent_id: a.id,
        balance: toCredits(a.balance),
        reserved: toCredits(a.reserved),
        available: toCredits(BigInt(a.balance) - BigInt(a.reserved)),
        status: a.status,
        parent_id: a.parent_id,
        updated_at: at,
      };
      return kv.put(a.id, JSON.stringify(state));
    }),
  );
}

export async function readPrices(sql: Sql): Promise<PriceState[]> {
  const rows = await sql<{ resource: string; price: bigint; floor_price: bigint; supply: bigint; utilization: number; window_id: bigint | null; updated_at: Date }[]>`
    SELECT resource, price, floor_price, supply, utilization, window_id, updated_at FROM market_state ORDER BY resource`;
  return rows.map((r) => ({
    resource: r.resource,
    price: toCredits(r.price),
    floor: toCredits(r.floor_price),
    supply: Number(r.supply),
    utilization: r.utilization,
    window_id: r.window_id === null ? null : Number(r.window_id),
    updated_at: r.updated_at.toISOString(),
  }));
}

export async function projectPrices(kv: KV, sql: Sql): Promise<PriceState[]> {
  const prices = await readPrices(sql);
  await Promise.all(prices.map((p) => kv.put(p.resource, JSON.stringify(p))));
  return prices;
}

/** Rewrites every key from the database. */
export async function rebuildProjections(agents: KV, prices: KV, sql: Sql): Promise<{ agents: number; prices: number }> {
  const ids = (await sql<{ id: string }[]>`SELECT id FROM agents`).map((r) => r.id);
  await projectAgents(agents, sql, ids);
  const p = await projectPrices(prices, sql);
  return { agents: ids.length, prices: p.length };
}

