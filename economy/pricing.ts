import { EconomyError, EconomyErrorCode } from "./errors.ts";
// Prices follow utilization with a bounded rule, EIP-1559 style: after each window
//   p' = p · (1 + (u − u*) / u* / 8)
// clamped to ±12.5 % of p and never below the floor. u is the share of supply allocated, u* the
// target. Over-use raises the price, under-use lowers it; a window at the target leaves it alone.

export type PriceRule = {
  /** Target utilization u*, in (0, 1]. */
  target: number;
  /** Lowest price per unit, micro-credits. */
  floor: number;
  /** Largest relative move per window. Default 0.125. */
  maxStep?: number;
  /** The EIP-1559 denominator. Default 8. */
  denominator?: number;
};

export function nextPrice(price: number, utilization: number, rule: PriceRule): number {
  if (!(rule.target > 0 && rule.target <= 1)) throw new EconomyError(EconomyErrorCode.Config, `target utilization must be in (0, 1], got ${rule.target}`);
  const u = Math.min(1, Math.max(0, Number.isFinite(utilization) ? utilization : 0));
  const step = rule.maxStep ?? 0.125;
  const change = Math.max(-step, Math.min(step, (u - rule.target) / rule.target / (rule.denominator ?? 8)));
  // whole micro-credits; a move too small to round still moves by one, so prices never stick
  let next = Math.round(price * (1 + change));
  if (next === price && change > 0) next = price + 1;
  if (next === price && change < 0) next = price - 1;
  return Math.max(rule.floor, next);
}
