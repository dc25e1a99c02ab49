import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// `scenario` — lists and runs the scenario files in this folder. Scenario files are *.scenario.json
// or *.scenario.ts; `scenario ls` lists what is shipped.

const here = dirname(fileURLToPath(import.meta.url));

const USAGE = `Usage: scenario <command>
  ls           list the shipped scenarios
  run NAME     run one scenario and judge it from the audit stream
`;

export function shippedScenarios(dir = here): string[] {
  return readdirSync(dir)
    .filter((f) => /\.scenario\.(json|ts)$/.test(f))
    .map((f) => f.replace(/\.scenario\.(json|ts)$/, ""))
    .sort();
}

export function run(argv: string[]): void {
  const [command, name] = argv;
  if (command === "ls") {
    const names = shippedScenarios();
    process.stdout.write(names.length ? `${names.join("\n")}\n` : "No scenarios are shipped yet.\n");
    process.exit(0);
  }
  if (command === "run") {
    const names = shippedScenarios();
    if (!name || !names.includes(name)) {
      process.stderr.write(`scenario: unknown scenario "${name ?? ""}"; shipped: ${names.join(", ") || "(none)"}\n`);
      process.exit(1);
    }
  }
  process.stdout.write(USAGE);
  process.exit(command ? 64 : 0);
}

if (process.argv[1] && join(process.argv[1]) === fileURLToPath(import.meta.url)) run(process.argv.slice(2));
