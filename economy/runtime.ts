import type { FunctionContext } from "syntropism";
import { Header } from "../host/headers.ts";
import { DEFAULT_MARKET, type MarketSettings } from "../config/settings.ts";
import type { Sql } from "./db.ts";
import type { Cause } from "./events.ts";
import { RESOURCES } from "./auction.ts";
import { toMicro } from "./money.ts";

// Small pure helpers the economy's functions share. The economy's state — the pool, the projector —
// lives in the economy resource (economy/resource.ts), one per host.

export { DEFAULT_MARKET };
export type MarketDefaults = MarketSettings;

export async function seedMarket(sql: Sql, market: MarketDefaults): Promise<void> {
  for (const r of RESOURCES) {
    const m = market[r];
    await sql`INSERT INTO market_state (resource, supply, price, floor_price, target_utilization)
              VALUES (${r}, ${m.supply}, ${toMicro(m.price).toString()}, ${toMicro(m.floor).toString()}, ${m.target})
              ON CONFLICT (resource) DO NOTHING`;
  }
}

/** The window a moment belongs to. */
export function windowOf(at: number, windowMs: number): number {
  return Math.floor(at / windowMs);
}

/** Who caused what this handler records: the message's id, correlation and trace. */
export function causeOf(ctx: FunctionContext<any>): Cause {
  const sc = ctx.span.spanContext();
  const valid = sc.traceId !== "00000000000000000000000000000000";
  return {
    sourceMsgId: ctx.msgId,
    correlationId: ctx.headers[Header.CorrelationId] || ctx.msgId,
    causationId: ctx.msgId,
    traceId: valid ? sc.traceId : undefined,
    spanId: valid ? sc.spanId : undefined,
    from: ctx.fn,
  };
}
