#!/usr/bin/env node
// Runs every test/**/*.test.ts through node:test with tsx as the loader.
// Node 20's --test does not expand globs, so the file list is built here.
//
// The fault suites (file names with "faults": thousands of bids while workers, nats-server or
// PostgreSQL are killed) each load both cores for a minute or more; two of them side by side starve
// each other's processes of CPU and measure the machine rather than the recovery. They run after
// the rest, one at a time; everything else runs two files at a time.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";

const args = process.argv.slice(2);
const filters = args.filter((a) => !a.startsWith("-"));
const flags = args.filter((a) => a.startsWith("-"));
const files = readdirSync("test", { recursive: true, encoding: "utf8" })
  .filter((f) => f.endsWith(".test.ts") && !f.split("/").includes("fixtures"))
  .map((f) => join("test", f))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(" ")}`);
  process.exit(1);
}
const heavy = (f) => /faults/.test(f);

function run(list, concurrency) {
  if (list.length === 0) return Promise.resolve(0);
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--test", `--test-concurrency=${concurrency}`, "--test-timeout=300000", ...flags, ...list],
    { stdio: "inherit" },
  );
  return new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

// agents' workspaces (made at genesis) go to a temporary folder, not the checkout's .data
const workspaces = process.env.AGENT_WORKSPACES ? undefined : mkdtempSync(join(tmpdir(), "syntropism-test-workspaces-"));
if (workspaces) process.env.AGENT_WORKSPACES = workspaces;
const first = await run(files.filter((f) => !heavy(f)), 2);
const second = await run(files.filter(heavy), 1);
if (workspaces) rmSync(workspaces, { recursive: true, force: true });
process.exit(first || second);
