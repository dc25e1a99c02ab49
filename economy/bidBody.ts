import * as v from "valibot";
import { RESOURCES } from "./auction.ts";
import type { BidInput } from "./bids.ts";

// The body of a bid, shared by market.bid.<agent_id> and market.execute_trade: a single bid
// {resource, quantity, price per unit}, or a bundle {bundle: {cpu?, memory?, tokens?, attention?},
// price for the whole}. One or the other, never both: a body with both would leave it to the
// parser which one the agent pays for. A bundle names only resources of the market (a misspelt one
// is refused, not dropped: the agent would pay for a bundle without it) and at least one.

const quantity = v.pipe(v.number(), v.integer(), v.minValue(1));

export const bundleSchema = v.pipe(
  v.strictObject(Object.fromEntries(RESOURCES.map((r) => [r, v.optional(quantity)])) as Record<(typeof RESOURCES)[number], v.OptionalSchema<typeof quantity, undefined>>),
  v.check((b) => Object.values(b).some((q) => q !== undefined), "names no resource"),
);

export const bidSchema = v.pipe(
  v.object({ resource: v.optional(v.picklist(RESOURCES)), quantity: v.optional(quantity), price: v.pipe(v.number(), v.gtValue(0)), bundle: v.optional(bundleSchema) }),
  v.check(
    (p) => (p.bundle === undefined ? p.resource !== undefined && p.quantity !== undefined : p.resource === undefined && p.quantity === undefined),
    "a bid is {resource, quantity, price} or {bundle, price}",
  ),
);

export type BidBody = v.InferOutput<typeof bidSchema>;

/** The economy's input for a body the schema accepted. */
export function bidInput(agentId: string, p: BidBody, streamSeq?: number): BidInput {
  const seq = streamSeq === undefined ? {} : { streamSeq };
  if (p.bundle) return { agentId, bundle: Object.fromEntries(Object.entries(p.bundle).filter(([, q]) => q !== undefined)), price: p.price, ...seq };
  return { agentId, resource: p.resource!, quantity: p.quantity!, price: p.price, ...seq };
}
