import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { FIXTURES, ROOT } from "./helpers/host.ts";

// The worker's process policy, in a real child process: an unhandled rejection is logged and the
// process keeps running; an uncaught exception is logged and stops it with exit 1 — through
// onFatal, or after fatalExitMs when onFatal does not finish.

function run(args: string[]): Promise<{ code: number | null; lines: Record<string, unknown>[]; ms: number }> {
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", resolve(FIXTURES, "processPolicyChild.ts"), ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (out += c));
  return new Promise((r) =>
    child.on("exit", (code) => r({ code, ms: Date.now() - started, lines: out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>) })),
  );
}

describe("process policy", () => {
  it("logs an unhandled rejection and keeps running; an uncaught exception stops the process with exit 1 through onFatal", async () => {
    const { code, lines } = await run([]);
    const msgs = lines.map((l) => l.msg);
    assert.equal(code, 1);
    const rejection = lines.find((l) => l.msg === "unhandled promise rejection; the worker keeps running");
    assert.ok(rejection, msgs.join("\n"));
    assert.match(JSON.stringify(rejection.err), /connection lost under a query/);
    assert.ok(msgs.indexOf("still alive after the rejection") > msgs.indexOf(rejection.msg));
    const fatal = lines.find((l) => String(l.msg).startsWith("uncaught exception"));
    assert.ok(fatal);
    assert.match(JSON.stringify(fatal.err), /something broke mid-way/);
    assert.ok(msgs.includes("onFatal called"));
  });

  it("exits 1 after fatalExitMs when onFatal does not finish", async () => {
    const { code, lines, ms } = await run(["hang"]);
    assert.equal(code, 1);
    assert.ok(lines.some((l) => l.msg === "onFatal called"));
    assert.ok(ms < 10_000, `took ${ms} ms`);
  });
});
