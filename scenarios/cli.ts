import { readdirSync, writeFileSync } from "node:fs";
import { loadSettings } from "../config/settings.ts";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describeNats, resolveNats } from "../host/configFile.ts";
import { loadScenario, SCENARIOS_DIR, ScenarioFormatError } from "./format.ts";
import { formatTable, junitXml, replayScenario, runScenario, startStack, type Report, type Stack } from "./runner.ts";

// `scenario` — lists, runs and replays the scenario files in this folder (*.scenario.json).
// docs/scenarios.md is the reference.

const here = SCENARIOS_DIR;

const USAGE = `Usage: scenario <command>
  ls                                        list the shipped scenarios and their purpose
  run NAME|FILE [--json FILE] [--junit FILE]
                                            run one scenario and judge it from the audit stream
  replay CORRELATION_ID --scenario NAME|FILE [--json FILE] [--junit FILE]
                                            re-judge a past run from the AUDIT stream only

Environment: NATS_URL (a running stack; unset: the one \`npm start\` wrote to .data/nats.url if it
answers, else — for run — one started for the run and thrown away after; stderr names the server),
DATABASE_URL (on a running stack: the invariants also run the ledger check), LOG_LEVEL.
Exit status: 0 every assertion passed, 1 one failed, 2 the run could not be made, 64 usage.
`;

export function shippedScenarios(dir = here): string[] {
  return readdirSync(dir)
    .filter((f) => /\.scenario\.json$/.test(f))
    .map((f) => f.replace(/\.scenario\.json$/, ""))
    .sort();
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function writeOutputs(args: string[], report: Report): void {
  const json = flag(args, "--json");
  if (json) writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
  const junit = flag(args, "--junit");
  if (junit) writeFileSync(junit, junitXml([report]));
}

/** Runs the command; resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [command, target] = argv;
  const out = (s: string) => process.stdout.write(s);
  const err = (s: string) => process.stderr.write(s);
  try {
    if (command === "ls") {
      const names = shippedScenarios();
      if (!names.length) out("No scenarios are shipped yet.\n");
      const width = Math.max(0, ...names.map((n) => n.length));
      for (const n of names) out(`${n.padEnd(width)}  ${loadScenario(n).purpose}\n`);
      return 0;
    }
    if (command === "run" && target) {
      const scenario = loadScenario(target);
      const progress = (line: string) => out(`${line}\n`);
      let stack: Stack | undefined;
      // a running stack (NATS_URL, or the one `npm start` runs); never the bare default address
      const nats = await resolveNats({ role: "scenario" });
      let natsUrl = nats.source === "default" ? undefined : nats.url;
      let creds = natsUrl ? nats.creds : undefined;
      let databaseUrl = natsUrl ? loadSettings().economy.databaseUrl : undefined;
      if (!natsUrl) {
        out(`starting a throw-away stack (nats-server, PostgreSQL, the economy's functions); window ${scenario.window_ms} ms\n`);
        stack = await startStack(scenario, (m) => out(`  ${m}\n`));
        ({ natsUrl, databaseUrl, creds } = stack);
        err(`nats: ${natsUrl} (a throw-away stack started for this run${nats.note ? `; ${nats.note}` : ""})\n`);
      } else {
        err(`${describeNats(nats)}\n`);
        if (scenario.setup.market) out(`note: running on an existing stack (${nats.source}), so setup.market is not applied (it applies only to a stack the runner starts)\n`);
      }
      try {
        const report = await runScenario(scenario, { natsUrl, databaseUrl, progress, ...(creds ? { creds } : {}) });
        out(`\n${formatTable(report)}`);
        writeOutputs(argv, report);
        return report.passed ? 0 : 1;
      } finally {
        await stack?.stop();
      }
    }
    if (command === "replay" && target) {
      const name = flag(argv, "--scenario");
      if (!name) {
        err("scenario replay: --scenario NAME is required (the scenario whose assertions to judge)\n");
        return 64;
      }
      const nats = await resolveNats({ role: "scenario" });
      if (nats.source === "default") {
        err(`scenario replay: set NATS_URL to the server whose AUDIT stream holds the run, or run it from the folder of the \`npm start\` that holds it (a run on a throw-away stack cannot be replayed)${nats.note ? `; ${nats.note}` : ""}\n`);
        return 2;
      }
      err(`${describeNats(nats)}\n`);
      const report = await replayScenario(loadScenario(name), target, { natsUrl: nats.url, ...(nats.creds ? { creds: nats.creds } : {}), progress: (l) => out(`${l}\n`) });
      out(`\n${formatTable(report)}`);
      writeOutputs(argv, report);
      return report.passed ? 0 : 1;
    }
  } catch (e) {
    if (e instanceof ScenarioFormatError) {
      err(`${e.message}\n`);
      if (command === "run" && e.problems[0] === "no such scenario file") err(`shipped: ${shippedScenarios().join(", ") || "(none)"}\n`);
      return 2;
    }
    err(`scenario: ${(e as Error).stack ?? e}\n`);
    return 2;
  }
  out(USAGE);
  return command ? 64 : 0;
}

export function run(argv: string[]): void {
  main(argv).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`${(e as Error).stack ?? e}\n`);
      process.exit(2);
    },
  );
}

if (process.argv[1] && join(process.argv[1]) === fileURLToPath(import.meta.url)) run(process.argv.slice(2));
