import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { FIXTURES, ROOT } from "./helpers/host.ts";

// The worker's process policy, in a real child process: an unhandled rejection is logged (a lost
// connection as a warning, anything else as an error, a storm of them bounded) and the process
// keeps running; an uncaught exception is logged and stops it with exit 1 — through onFatal, after
// fatalExitMs when onFatal does not finish, or when the event loop simply runs dry.

type Line = Record<string, unknown> & { msg: string; level: string; err?: Record<string, unknown> };

function run(mode?: string): Promise<{ code: number | null; lines: Line[]; ms: number }> {
  const started = Date.now();
  const args = ["--import", "tsx", resolve(FIXTURES, "processPolicyChild.ts"), ...(mode ? [mode] : [])];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (out += c));
  return new Promise((r) =>
    child.on("exit", (code) => r({ code, ms: Date.now() - started, lines: out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line) })),
  );
}

describe("process policy", () => {
  it("logs unhandled rejections with their error and class and keeps running; an uncaught exception stops the process with exit 1 through onFatal", async () => {
    const { code, lines } = await run();
    const msgs = lines.map((l) => l.msg);
    assert.equal(code, 1);
    const rejections = lines.filter((l) => l.msg.startsWith("unhandled promise rejection"));
    assert.equal(rejections.length, 2, msgs.join("\n"));
    const [lost, bug] = rejections as [Line, Line];
    assert.equal(lost.level, "warn");
    assert.equal(lost.class, "transient");
    assert.equal(lost.err?.code, "ECONNRESET");
    assert.equal(lost.err?.message, "connection lost under a query");
    assert.deepEqual(lost.err?.cause, { name: "Error", message: "socket hang up" });
    assert.match(String(lost.err?.stack), /processPolicyChild\.ts/);
    assert.ok(String(lost.err?.stack).split("\n").length <= 12);
    assert.equal(bug.level, "error");
    assert.equal(bug.class, "unknown");
    assert.equal(bug.err?.message, "a bug nobody awaited");
    assert.ok(msgs.indexOf("still alive after the rejections") > msgs.indexOf(bug.msg));
    const fatal = lines.find((l) => l.msg.startsWith("uncaught exception"));
    assert.ok(fatal);
    assert.equal(fatal.err?.message, "something broke mid-way");
    assert.ok(msgs.includes("onFatal called"));
  });

  it("exits 1 after fatalExitMs when onFatal does not finish", async () => {
    const { code, lines, ms } = await run("hang");
    assert.equal(code, 1);
    assert.ok(lines.some((l) => l.msg === "onFatal called"));
    assert.ok(lines.some((l) => l.msg.includes("did not finish; exiting")));
    assert.ok(ms < 10_000, `took ${ms} ms`);
  });

  it("exits 1 when, after an uncaught exception, nothing keeps the process alive", async () => {
    const { code, lines } = await run("dry");
    assert.equal(code, 1);
    assert.ok(lines.some((l) => l.msg === "onFatal called"));
  });

  it("logs a storm of rejections a bounded number of times, then counts the rest", async () => {
    const { code, lines } = await run("storm");
    assert.equal(code, 0);
    assert.equal(lines.filter((l) => l.msg.startsWith("unhandled promise rejection")).length, 10);
    const summary = lines.find((l) => l.msg.startsWith("more unhandled promise rejections"));
    assert.equal(summary?.suppressed, 40);
  });
});
