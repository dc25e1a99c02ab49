import { readFileSync, existsSync } from "node:fs";
import { CodedError } from "../host/errors.ts";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as v from "valibot";

// The scenario file format: scenarios/<name>.scenario.json, validated here. docs/scenarios.md is
// the reference.

export const SCENARIOS_DIR = dirname(fileURLToPath(import.meta.url));

const agentId = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,40}$/, "must be 1–40 of [A-Za-z0-9_-]"));
const ms = v.pipe(v.number(), v.integer(), v.minValue(0));
const positiveMs = v.pipe(v.number(), v.integer(), v.minValue(1));

/** A field constraint: a plain value means equality, an object names operators. */
const Operand = v.union([v.number(), v.string(), v.boolean(), v.null()]);
const OperatorSet = v.strictObject({
  "=": v.optional(Operand),
  "!=": v.optional(Operand),
  "<": v.optional(v.number()),
  "<=": v.optional(v.number()),
  ">": v.optional(v.number()),
  ">=": v.optional(v.number()),
  in: v.optional(v.array(Operand)),
  exists: v.optional(v.boolean()),
});
const Where = v.record(v.string(), v.union([Operand, OperatorSet]));
export type Where = v.InferOutput<typeof Where>;
export type Operators = v.InferOutput<typeof OperatorSet>;

const Match = v.strictObject({ type: v.pipe(v.string(), v.minLength(1)), where: v.optional(Where) });
const Bound = OperatorSet;

const common = { name: v.optional(v.string()) };

const Exists = v.strictObject({ ...common, kind: v.literal("exists"), type: v.pipe(v.string(), v.minLength(1)), where: v.optional(Where), within_ms: positiveMs, count: v.optional(Bound) });
const Sequence = v.strictObject({ ...common, kind: v.literal("sequence"), steps: v.pipe(v.array(Match), v.minLength(2)), max_gap_ms: positiveMs, within_ms: v.optional(positiveMs) });
const Never = v.strictObject({ ...common, kind: v.literal("never"), type: v.pipe(v.string(), v.minLength(1)), where: v.optional(Where) });
const State = v.strictObject({
  ...common,
  kind: v.literal("state"),
  of: v.picklist(["balance", "price"]),
  agent: v.optional(agentId),
  resource: v.optional(v.picklist(["cpu", "memory", "tokens", "attention"])),
  after: v.optional(Match),
  equals: v.optional(v.number()),
  tolerance: v.optional(v.pipe(v.number(), v.minValue(0))),
  min: v.optional(v.number()),
  max: v.optional(v.number()),
});
const Invariants = v.strictObject({ ...common, kind: v.literal("invariants"), checks: v.optional(v.array(v.picklist(["conservation", "non_negative"]))) });
const Metrics = v.strictObject({
  ...common,
  kind: v.literal("metrics"),
  metric: v.picklist(["gini", "price_convergence", "price_change", "allocative_efficiency"]),
  resource: v.optional(v.picklist(["cpu", "memory", "tokens", "attention"])),
  k: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  bound: v.optional(Bound),
});

export const AssertionSchema = v.variant("kind", [Exists, Sequence, Never, State, Invariants, Metrics]);
export type Assertion = v.InferOutput<typeof AssertionSchema>;

const Stimulus = v.strictObject({
  at_ms: ms,
  kind: v.picklist(["publish", "request"]),
  subject: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$/, "must be a NATS subject without wildcards")),
  body: v.optional(v.unknown()),
  as: v.optional(agentId),
});
export type Stimulus = v.InferOutput<typeof Stimulus>;

const Market = v.record(v.picklist(["cpu", "memory", "tokens", "attention"]), v.strictObject({ supply: v.optional(v.pipe(v.number(), v.minValue(1))), price: v.optional(v.pipe(v.number(), v.gtValue(0))) }));

export const ScenarioSchema = v.pipe(
  v.strictObject({
    $schema: v.optional(v.string()),
    name: v.pipe(v.string(), v.regex(/^[a-z0-9_-]{1,40}$/, "must be 1–40 of [a-z0-9_-]")),
    purpose: v.pipe(v.string(), v.minLength(1), v.check((s) => !s.includes("\n"), "must be one line")),
    window_ms: v.pipe(v.number(), v.integer(), v.minValue(100)),
    timeout_ms: positiveMs,
    settle_ms: v.optional(ms),
    setup: v.strictObject({
      agents: v.array(v.strictObject({ id: agentId, credits: v.pipe(v.number(), v.minValue(0)), parent: v.optional(agentId) })),
      spawned: v.optional(v.array(agentId)),
      market: v.optional(Market),
      /** Per-agent MCP gateway quotas, written to the mcp_quotas KV bucket before the stimuli. */
      quotas: v.optional(v.record(agentId, v.strictObject({ max_mcp_calls_per_hour: v.pipe(v.number(), v.integer(), v.minValue(0)) }))),
    }),
    stimuli: v.array(Stimulus),
    assertions: v.pipe(v.array(AssertionSchema), v.minLength(1)),
  }),
  v.check((s) => {
    const ids = new Set(s.setup.agents.map((a) => a.id));
    return s.setup.agents.every((a) => !a.parent || ids.has(a.parent));
  }, "setup.agents: a parent must be a declared agent"),
);
export type Scenario = v.InferOutput<typeof ScenarioSchema>;

/** The scenarios' error catalogue. */
export const ScenarioErrorCode = {
  /** A scenario file that does not exist, is not JSON, or does not match the format. */
  Format: "SCENARIO_FORMAT",
  /** The run's setup did not take (an agent did not appear in time). */
  Setup: "SCENARIO_SETUP",
  /** A replay found no event of the run it was asked for. */
  RunNotFound: "SCENARIO_RUN_NOT_FOUND",
} as const;
export type ScenarioErrorCode = (typeof ScenarioErrorCode)[keyof typeof ScenarioErrorCode];

export class ScenarioError extends CodedError<ScenarioErrorCode> {
  override name = "ScenarioError";
}

export class ScenarioFormatError extends ScenarioError {
  override name = "ScenarioFormatError";
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(ScenarioErrorCode.Format, `${file}: invalid scenario\n${problems.map((p) => `  ${p}`).join("\n")}`);
  }
}

export function parseScenario(data: unknown, file = "<scenario>"): Scenario {
  const r = v.safeParse(ScenarioSchema, data);
  if (!r.success) throw new ScenarioFormatError(file, r.issues.map((i) => `${v.getDotPath(i) ?? "(root)"}: ${i.message}`));
  return r.output;
}

/** A shipped scenario by name, or a file path (anything with a "/" or ending in .json). */
export function scenarioFile(nameOrPath: string, dir = SCENARIOS_DIR): string {
  if (nameOrPath.includes("/") || nameOrPath.endsWith(".json")) return resolve(nameOrPath);
  return resolve(dir, `${nameOrPath}.scenario.json`);
}

export function loadScenario(nameOrPath: string, dir = SCENARIOS_DIR): Scenario {
  const file = scenarioFile(nameOrPath, dir);
  if (!existsSync(file)) throw new ScenarioFormatError(file, ["no such scenario file"]);
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ScenarioFormatError(file, [`(root): not JSON: ${(err as Error).message}`]);
  }
  return parseScenario(data, file);
}

/** The name of each assertion: its `name`, else "<index> <kind> <type…>". */
export function assertionName(a: Assertion, i: number): string {
  if (a.name) return a.name;
  switch (a.kind) {
    case "exists":
    case "never":
      return `${i + 1} ${a.kind} ${a.type}`;
    case "sequence":
      return `${i + 1} sequence ${a.steps.map((s) => s.type).join("→")}`;
    case "state":
      return `${i + 1} state ${a.of} ${a.agent ?? a.resource ?? ""}`.trim();
    case "invariants":
      return `${i + 1} invariants`;
    case "metrics":
      return `${i + 1} metric ${a.metric}${a.resource ? ` ${a.resource}` : ""}`;
  }
}
