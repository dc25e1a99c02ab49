import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, waitFor } from "./helpers/host.ts";

// Ctrl-C in `npm start`'s terminal: the terminal sends SIGINT to the whole foreground process
// group. nats-server and PostgreSQL run in groups of their own, so only `npm start` gets it and
// stops, in order, the functions, then nats-server, then PostgreSQL — with nothing logged at warn
// or error on the way down.

const made: string[] = [];
after(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** The process group of `pid` (Linux: field 5 of /proc/PID/stat). */
function pgid(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

const parse = (line: string): Record<string, unknown> | undefined => {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
};

test("npm start - SIGINT to its process group stops functions, then nats-server, then PostgreSQL, quietly, exit 0", { skip: !existsSync("/proc/self/stat") && "needs /proc" }, async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), "syntropism-start-"));
  made.push(cwd);
  // as root PostgreSQL runs as another user, who must reach .data/pg (mkdtemp makes the folder 0700)
  chmodSync(cwd, 0o755);
  const env: NodeJS.ProcessEnv = { ...process.env, NATS_URL: "", LOG_LEVEL: "info" };
  delete env.DATABASE_URL; // the embedded PostgreSQL, so that its place in the order is tested too
  // as `npm start` runs it (the tsx CLI, which relays signals to its child), in a group of its own
  // as a terminal's foreground job is, so that the group's SIGINT does not reach this test
  const child = spawn(join(ROOT, "node_modules/.bin/tsx"), [join(ROOT, "economy/dev.ts"), "--config", join(ROOT, "streams.config.ts"), "--functions", join(ROOT, "functions")], {
    cwd,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (out += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on("exit", (code, signal) => r({ code, signal })));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(-child.pid!, "SIGKILL");
      await exited;
    }
  });

  await waitFor("the stack ready", () => {
    if (child.exitCode !== null) throw new Error(`npm start exited (${child.exitCode}):\n${out}`);
    return out.includes("Ctrl-C stops everything") || undefined;
  }, 120_000, 100).catch((err) => {
    throw new Error(`${(err as Error).message}\n--- output ---\n${out}`);
  });

  const portsFile = readdirSync(join(cwd, ".data", "run")).find((f) => /^nats-server_\d+\.ports$/.test(f));
  assert.ok(portsFile, "no nats-server ports file in .data/run");
  const natsPid = Number(/_(\d+)\.ports$/.exec(portsFile)![1]);
  const running = out.split("\n").map(parse).find((l) => String(l?.msg).startsWith("embedded PostgreSQL running"));
  assert.ok(running, `no "embedded PostgreSQL running" line:\n${out}`);
  const pgPid = Number(running.pid);
  assert.ok(alive(natsPid) && alive(pgPid));
  const group = pgid(child.pid!);
  assert.notEqual(pgid(natsPid), group, "nats-server is in npm start's process group: Ctrl-C reaches it");
  assert.notEqual(pgid(pgPid), group, "PostgreSQL is in npm start's process group: Ctrl-C reaches it");

  const mark = out.length;
  process.kill(-child.pid!, "SIGINT"); // what Ctrl-C does
  let timer: NodeJS.Timeout | undefined;
  const { code } = await Promise.race([
    exited,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`npm start did not exit within 60 s of SIGINT:\n${out}`)), 60_000))),
  ]).finally(() => clearTimeout(timer));
  assert.equal(code, 0, out);

  const shutdown = out.slice(mark).split("\n").filter(Boolean);
  const loud = shutdown.filter((l) => {
    const level = parse(l)?.level;
    return level === "warn" || level === "error" || /FATAL|\bERROR\b|Error:/.test(l);
  });
  assert.deepEqual(loud, [], `the shutdown logged warnings or errors:\n${out.slice(mark)}`);
  assert.doesNotMatch(out, /"level":"error"|FATAL/, out);

  const msgs = shutdown.map((l) => parse(l)?.msg);
  const order = ["host stopped", "local nats-server stopped", "embedded PostgreSQL stopped"].map((m) => msgs.indexOf(m));
  assert.ok(order.every((i) => i >= 0), `missing stop lines:\n${out.slice(mark)}`);
  assert.ok(order[0]! < order[1]! && order[1]! < order[2]!, `stopped out of order:\n${out.slice(mark)}`);

  assert.equal(alive(natsPid), false, "nats-server outlived npm start");
  assert.equal(alive(pgPid), false, "PostgreSQL outlived npm start");
  assert.equal(existsSync(join(cwd, ".data", "nats.url")), false);
});
