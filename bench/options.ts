import { UsageError } from "../host/errors.ts";
import { parseArgs } from "node:util";

// Every option is a flag and an environment variable: `--max-lag 50` or BENCH_MAX_LAG=50.
// A flag wins over the environment, which wins over the default.

export const BENCHMARKS = ["pingpong", "throughput", "latency", "bids", "auth", "agents", "faults-pg"] as const;
export type BenchName = (typeof BENCHMARKS)[number];
/** Run only when named: they take minutes and measure recovery, not speed. */
export const OPT_IN: readonly BenchName[] = ["faults-pg", "agents"];

type Spec = { default: string; help: string; bench?: BenchName };

const SPECS = {
  // pingpong
  count: { default: "5000", help: "round trips per variant (pingpong, auth)" },
  size: { default: "128", help: "request payload bytes (pingpong, auth)" },
  concurrency: { default: "1", help: "requesters running at once (each sequential)", bench: "pingpong" },
  warmup: { default: "500", help: "round trips before measuring, not counted (pingpong, auth)" },
  "p95-ms": { default: "15", help: "gate: host p95 must be below this many ms", bench: "pingpong" },
  // throughput
  messages: { default: "50000", help: "messages pre-published and drained per variant", bench: "throughput" },
  "msg-size": { default: "64", help: "message payload bytes (throughput and latency)" },
  variants: { default: "raw,workers1,workers2", help: "throughput variants: raw, inprocess, workers1, workers2, workersN", bench: "throughput" },
  "max-messages": { default: "256", help: "raw consume() max_messages (throughput and latency)" },
  "min-ratio": { default: "0.7", help: "target: host msgs/s at least this fraction of raw", bench: "throughput" },
  // latency
  rates: { default: "1000,5000", help: "offered rates, msgs/s", bench: "latency" },
  duration: { default: "6", help: "seconds per rate", bench: "latency" },
  "max-lag": { default: "100", help: "target: peak num_pending below this many messages", bench: "latency" },
  // bids
  bids: { default: "10000", help: "bids pre-published per variant (publish → ledger commit → event)", bench: "bids" },
  "bid-workers": { default: "1,2", help: "host worker counts to run the economy with", bench: "bids" },
  "min-bids": { default: "5000", help: "target: bids per second end to end", bench: "bids" },
  // agents
  "agent-counts": { default: "1,20", help: "agents launched at once, per variant (needs root: a private Docker engine)", bench: "agents" },
  // faults-pg
  "pg-outages": { default: "30,60", help: "seconds PostgreSQL stays stopped, one outage each", bench: "faults-pg" },
  "pg-rounds": { default: "3", help: "times each short fault (restart, crash, dropped connections) is repeated", bench: "faults-pg" },
  "pg-rate": { default: "150", help: "bids per second published throughout (below what clearing sustains)", bench: "faults-pg" },
  "pg-workers": { default: "2", help: "host worker processes", bench: "faults-pg" },
  "pg-max-resume-ms": { default: "5000", help: "target: first bid committed within this many ms of the database's return (deferral cap 2 s + reconnect cap 1 s + handling)", bench: "faults-pg" },
  // all
  "host-concurrency": { default: "", help: "concurrency of the bench functions (default: the host's, 8)" },
  profile: { default: "", help: "directory for --cpu-prof profiles of the host processes" },
} satisfies Record<string, Spec>;

export type OptionName = keyof typeof SPECS;

export type Options = {
  benchmarks: BenchName[];
  gate: boolean;
  count: number;
  size: number;
  concurrency: number;
  warmup: number;
  p95Ms: number;
  messages: number;
  msgSize: number;
  variants: string[];
  maxMessages: number;
  minRatio: number;
  rates: number[];
  durationS: number;
  maxLag: number;
  bids: number;
  bidWorkers: number[];
  minBids: number;
  agentCounts: number[];
  pgOutages: number[];
  pgRounds: number;
  pgRate: number;
  pgWorkers: number;
  pgMaxResumeMs: number;
  hostConcurrency?: number;
  profile?: string;
};

export const envName = (name: string) => `BENCH_${name.toUpperCase().replace(/-/g, "_")}`;

export function usage(): string {
  const lines = [
    "Usage: npm run bench -- [pingpong] [throughput] [latency] [bids] [auth] [agents] [faults-pg] [--gate] [options]",
    "",
    `No names runs all but ${OPT_IN.join(", ")} (run only when named). --gate exits 1 when a target is missed.`,
    "",
    "Options (flag / environment variable / default):",
  ];
  for (const [name, s] of Object.entries(SPECS) as [string, Spec][]) {
    lines.push(`  --${name.padEnd(16)} ${envName(name).padEnd(23)} ${(s.default || '""').padEnd(22)} ${s.bench ? `[${s.bench}] ` : ""}${s.help}`);
  }
  return lines.join("\n");
}


export function parseOptions(argv: string[], env = process.env): Options | "help" {
  const options = Object.fromEntries(Object.keys(SPECS).map((k) => [k, { type: "string" as const }]));
  const { values, positionals } = parseArgs({
    args: argv,
    options: { ...options, gate: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return "help";
  const given = values as Record<string, string | boolean | undefined>;
  const raw = (name: OptionName): string => (given[name] as string | undefined) ?? env[envName(name)] ?? SPECS[name].default;
  const num = (name: OptionName, min: number, integer = true): number => {
    const n = Number(raw(name));
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) throw new UsageError(`--${name} must be ${integer ? "an integer" : "a number"} ≥ ${min}, got ${raw(name)}`);
    return n;
  };
  const list = (name: OptionName) => raw(name).split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of positionals) if (!(BENCHMARKS as readonly string[]).includes(p)) throw new UsageError(`unknown benchmark "${p}" (choose from ${BENCHMARKS.join(", ")})`);
  const benchmarks = BENCHMARKS.filter((b) => (positionals.length === 0 ? !OPT_IN.includes(b) : positionals.includes(b)));
  const variants = list("variants");
  for (const v of variants) if (!/^(raw|inprocess|workers[1-9][0-9]*)$/.test(v)) throw new UsageError(`unknown throughput variant "${v}"`);
  const rates = list("rates").map(Number);
  if (!rates.length || rates.some((r) => !Number.isFinite(r) || r <= 0)) throw new UsageError(`--rates must be positive numbers, got ${raw("rates")}`);
  return {
    benchmarks,
    gate: values.gate === true || env.BENCH_GATE === "1",
    count: num("count", 1),
    size: num("size", 16),
    concurrency: num("concurrency", 1),
    warmup: num("warmup", 0),
    p95Ms: num("p95-ms", 0, false),
    messages: num("messages", 1),
    msgSize: num("msg-size", 32),
    variants,
    maxMessages: num("max-messages", 1),
    minRatio: num("min-ratio", 0, false),
    rates,
    durationS: num("duration", 1, false),
    maxLag: num("max-lag", 0),
    bids: num("bids", 1),
    bidWorkers: list("bid-workers").map(Number),
    minBids: num("min-bids", 0, false),
    agentCounts: list("agent-counts").map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`--agent-counts must be integers ≥ 1, got ${raw("agent-counts")}`);
      return n;
    }),
    pgOutages: list("pg-outages").map((x) => {
      const n = Number(x);
      if (!Number.isFinite(n) || n < 0) throw new UsageError(`--pg-outages must be seconds ≥ 0, got ${raw("pg-outages")}`);
      return n;
    }),
    pgRounds: num("pg-rounds", 0),
    pgRate: num("pg-rate", 1),
    pgWorkers: num("pg-workers", 1),
    pgMaxResumeMs: num("pg-max-resume-ms", 0),
    hostConcurrency: raw("host-concurrency") ? num("host-concurrency", 1) : undefined,
    profile: raw("profile") || undefined,
  };
}
