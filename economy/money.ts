import { InvalidAmountError } from "./errors.ts";

// Credits are integers of micro-credits (1 credit = 1,000,000 micro-credits), BIGINT in Postgres
// and bigint in TypeScript, so sums are exact. Numbers with a fraction exist only at the edges
// (a CLI flag, a scenario file) and are converted here, refusing what would lose precision.

export const MICRO_PER_CREDIT = 1_000_000n;
/** The largest amount a BIGINT column holds. */
export const MAX_MICRO = 2n ** 63n - 1n;

/** Credits (at most 6 decimals) → micro-credits. Refuses NaN, ±Infinity, finer amounts and unsafe magnitudes. */
export function toMicro(credits: number): bigint {
  if (typeof credits !== "number" || !Number.isFinite(credits)) throw new InvalidAmountError(`not a finite number of credits: ${String(credits)}`);
  const micro = Math.round(credits * 1e6);
  if (!Number.isSafeInteger(micro)) throw new InvalidAmountError(`${credits} credits is too large to convert exactly; pass micro-credits as a bigint`);
  // exact for every decimal with at most 6 fractional digits: both sides are the double nearest to it
  if (micro / 1e6 !== credits) throw new InvalidAmountError(`${credits} credits is finer than one micro-credit (at most 6 decimals)`);
  return BigInt(micro);
}

/** Micro-credits → credits as a number. Refuses non-integers and amounts a double cannot hold exactly (toMicro gives them back). */
export function toCredits(micro: bigint | number): number {
  const value = asInteger(micro, "micro-credits");
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidAmountError(`${value} micro-credits cannot be represented exactly as a number of credits; use formatCredits`);
  }
  const credits = Number(value) / 1e6;
  // beyond ~15 significant digits a double cannot hold every micro-credit
  if (BigInt(Math.round(credits * 1e6)) !== value) throw new InvalidAmountError(`${value} micro-credits cannot be represented exactly as a number of credits; use formatCredits`);
  return credits;
}

/** Exact decimal text of a micro-credit amount: 1500000n → "1.5", -1n → "-0.000001". */
export function formatCredits(micro: bigint | number): string {
  const value = asInteger(micro, "micro-credits");
  const sign = value < 0n ? "-" : "";
  const abs = value < 0n ? -value : value;
  const whole = abs / MICRO_PER_CREDIT;
  const frac = (abs % MICRO_PER_CREDIT).toString().padStart(6, "0").replace(/0+$/, "");
  return `${sign}${whole}${frac ? `.${frac}` : ""}`;
}

/** A positive amount of micro-credits that fits a BIGINT (what every ledger operation moves). */
export function asAmount(micro: bigint | number, what = "amount"): bigint {
  const value = asInteger(micro, what);
  if (value <= 0n) throw new InvalidAmountError(`${what} must be positive, got ${value}`);
  if (value > MAX_MICRO) throw new InvalidAmountError(`${what} ${value} exceeds the largest amount (${MAX_MICRO})`);
  return value;
}

function asInteger(micro: bigint | number, what: string): bigint {
  if (typeof micro === "bigint") return micro;
  if (typeof micro === "number" && Number.isSafeInteger(micro)) return BigInt(micro);
  throw new InvalidAmountError(`${what} must be an integer number of micro-credits (a bigint, or a safe integer), got ${String(micro)}`);
}
