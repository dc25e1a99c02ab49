import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, normalize, resolve } from "node:path";

// Which folder may import which. host/ is the embeddable library: it imports none of the economy,
// the gateway, the functions, the command line or tracing (otel/ imports host/, not the other way
// round). bench/ imports no test code (what it shares with the tests is in testing/).

const ROOT = resolve(import.meta.dirname, "..");

function importsOf(dir: string): { file: string; target: string }[] {
  const out: { file: string; target: string }[] = [];
  for (const f of readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" }).filter((x) => /\.(ts|mjs)$/.test(x))) {
    const text = readFileSync(join(ROOT, dir, f), "utf8");
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+)"/g)) {
      out.push({ file: `${dir}/${f}`, target: normalize(join(dir, f, "..", m[1]!)).split("/")[0]! });
    }
  }
  return out;
}

describe("folder boundaries", () => {
  it("host/ imports none of economy, gateway, functions, scenarios, cli, otel, test", () => {
    const bad = importsOf("host").filter((i) => ["economy", "gateway", "functions", "scenarios", "cli", "otel", "test", "bench"].includes(i.target));
    assert.deepEqual(bad, []);
  });

  it("sandbox/ imports none of economy, gateway, functions, scenarios, cli, test; agent/ (the image's code) nothing outside itself", () => {
    const bad = importsOf("sandbox").filter((i) => ["economy", "gateway", "functions", "scenarios", "cli", "test", "bench"].includes(i.target));
    assert.deepEqual(bad, []);
    assert.deepEqual(importsOf("agent").filter((i) => i.target !== "agent"), []);
  });

  it("llm/ (the local model server) imports nothing of the project but config/", () => {
    assert.deepEqual(importsOf("llm").filter((i) => !["llm", "config"].includes(i.target)), []);
  });

  it("bench/ and testing/ import no test code", () => {
    const bad = [...importsOf("bench"), ...importsOf("testing")].filter((i) => i.target === "test");
    assert.deepEqual(bad, []);
  });
});
