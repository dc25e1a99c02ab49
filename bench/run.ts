import { formatTable, log, setupInfo, writeResults, type BenchResult } from "./lib.ts";
import { latency } from "./latency.ts";
import { parseOptions, usage, type BenchName, type Options } from "./options.ts";
import { pingpong } from "./pingpong.ts";
import { throughput } from "./throughput.ts";
import { bids } from "./bids.ts";
import { faultsPg } from "./faults-pg.ts";
import { authCost } from "./auth.ts";
import { agents } from "./agents.ts";

// `npm run bench -- [names] [options]`: runs the chosen benchmarks one after another (without
// names, all but the opt-in ones, options.ts OPT_IN), each on its own nats-server, prints a table
// per benchmark and writes bench/results/<time>.json + latest.json.

const RUNNERS: Record<BenchName, (o: Options) => Promise<BenchResult>> = { pingpong, throughput, latency, bids, auth: authCost, agents, "faults-pg": faultsPg };

async function main(): Promise<number> {
  let o: Options | "help";
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n\n${usage()}\n`);
    return 64;
  }
  if (o === "help") {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  // read by bench/functions/*.ts in the host processes, which inherit this environment
  if (o.hostConcurrency) process.env.BENCH_HOST_CONCURRENCY = String(o.hostConcurrency);
  const startedAt = new Date().toISOString();
  const results: BenchResult[] = [];
  const failures: string[] = [];
  for (const name of o.benchmarks) {
    log(`running ${name}`);
    const t = performance.now();
    try {
      const r = await RUNNERS[name](o);
      results.push(r);
      process.stdout.write(`\n${name} (${((performance.now() - t) / 1000).toFixed(1)} s)\n${formatTable(r.table.headers, r.table.rows)}\n`);
      for (const note of r.notes ?? []) process.stdout.write(`  note: ${note}\n`);
    } catch (err) {
      failures.push(`${name}: ${(err as Error).stack ?? err}`);
      process.stderr.write(`bench: ${name} failed: ${(err as Error).stack ?? err}\n`);
    }
  }
  const targets = results.flatMap((r) => r.targets.map((t) => ({ bench: r.name, ...t })));
  const setup = setupInfo(results[0]?.natsVersion);
  const { file, latest } = writeResults({
    started_at: startedAt,
    finished_at: new Date().toISOString(),
    argv: process.argv.slice(2),
    setup,
    benchmarks: Object.fromEntries(results.map((r) => [r.name, { options: r.options, variants: r.variants, targets: r.targets, notes: r.notes ?? [] }])),
    targets,
    errors: failures,
  });
  process.stdout.write(`\nsetup: ${setup.cpu_model}, ${setup.cpu_cores} cores, node ${setup.node}, nats-server ${setup.nats_server}\n`);
  for (const t of targets) process.stdout.write(`  ${t.verdict.padEnd(4)}  ${t.what}: ${t.detail}\n`);
  process.stdout.write(`results: ${file}\n         ${latest}\n`);
  const missed = targets.filter((t) => t.verdict === "FAIL");
  if (failures.length) return 1;
  if (o.gate && missed.length) {
    process.stderr.write(`bench: ${missed.length} target(s) missed (--gate)\n`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
