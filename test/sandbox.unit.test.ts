import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { outputSink, TAIL_BYTES } from "../sandbox/output.ts";
import { packageClosure, planImage } from "../sandbox/image.ts";
import { natsTarget } from "../sandbox/relay.ts";
import { validateLimits, containerName } from "../sandbox/docker.ts";
import { labelsOf } from "../sandbox/types.ts";

// The sandbox layer's pure parts: output lines and tail, the image's inputs and hash, specs.

describe("sandbox parts", () => {
  it("output: lines as they complete, per stream; the tail keeps the last 64 KiB of whole lines", () => {
    const seen: string[] = [];
    const sink = outputSink((l, s) => seen.push(`${s}:${l}`));
    sink.write("a\nb", "stdout");
    sink.write("x\n", "stderr");
    sink.write("c\n", "stdout");
    sink.write("tail-without-newline", "stdout");
    sink.end();
    assert.deepEqual(seen, ["stdout:a", "stderr:x", "stdout:bc", "stdout:tail-without-newline"]);
    const big = outputSink();
    for (let i = 0; i < 5000; i++) big.write(`line ${i} ${"x".repeat(40)}\n`, "stdout");
    const tail = big.tail();
    assert.ok(Buffer.byteLength(tail) <= TAIL_BYTES);
    assert.ok(tail.endsWith(`line 4999 ${"x".repeat(40)}`));
    assert.ok(tail.startsWith("line "), "whole lines only");
  });

  it("image: every input is listed; the tag changes with any agent file and not otherwise", () => {
    const a = planImage();
    const b = planImage();
    assert.equal(a.tag, b.tag);
    assert.match(a.tag, /^syntropism-agent:[0-9a-f]{16}$/);
    const paths = a.entries.map((e) => e.path);
    for (const p of [process.execPath, "/etc/passwd", "/etc/group", "/tmp", "/workspace", "/run/nats", "/opt/agent/launcher.mjs", "/opt/agent/sdk.mjs", "/opt/agent/default-agent.mjs", "/opt/agent/node_modules/@nats-io/transport-node/package.json", "/opt/agent/node_modules/tweetnacl/package.json"]) {
      assert.ok(paths.includes(p), `${p} is in the image`);
    }
    assert.ok(paths.some((p) => /\/libc\.so\.6$/.test(p)), "node's libraries are in the image");
    // a copy of the repository's agent/ and node_modules subset with one byte changed
    const root = resolve(import.meta.dirname, "..");
    const copy = mkdtempSync(join(tmpdir(), "syntropism-image-"));
    try {
      cpSync(join(root, "agent"), join(copy, "agent"), { recursive: true });
      for (const pkg of packageClosure(["@nats-io/transport-node"], root)) cpSync(join(root, pkg), join(copy, pkg), { recursive: true });
      assert.equal(planImage({ root: copy }).tag, a.tag, "same inputs, same tag");
      writeFileSync(join(copy, "agent", "default-agent.mjs"), "// changed\n", { flag: "a" });
      assert.notEqual(planImage({ root: copy }).tag, a.tag);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it("specs: NATS URLs, limits, names and labels", () => {
    assert.deepEqual(natsTarget("nats://127.0.0.1:41234,nats://other:1"), { host: "127.0.0.1", port: 41234 });
    assert.deepEqual(natsTarget("nats://localhost"), { host: "localhost", port: 4222 });
    assert.throws(() => natsTarget("tls://x:1"), /plain nats:\/\/ only/);
    assert.throws(() => validateLimits({ memoryMiB: 8, cpuMillicores: 0, pids: 4 }), /memoryMiB 8.*cpuMillicores 0.*pids 4/);
    validateLimits({ memoryMiB: 64, cpuMillicores: 250, pids: 32 });
    assert.equal(containerName("w12/alice:1"), "syntropism-w12_alice_1");
    assert.deepEqual(labelsOf({ executionId: "e", agentId: "a", windowId: 4, correlationId: "c", workspace: "/w", limits: { memoryMiB: 64, cpuMillicores: 250, pids: 32 }, natsUrl: "nats://x", labels: { team: "t" } }), {
      team: "t", "syntropism.execution": "e", "syntropism.agent": "a", "syntropism.window": "4", "syntropism.correlation": "c",
    });
  });
});
