import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ErrorCode, HostError, UsageError } from "../host/errors.ts";
import { EconomyError, EconomyErrorCode } from "../economy/errors.ts";
import { EmbeddedPostgresError, EmbeddedPostgresErrorCode } from "../economy/embeddedPostgres.ts";
import { GatewayError, GatewayErrorCode } from "../gateway/errors.ts";
import { ScenarioErrorCode, ScenarioFormatError } from "../scenarios/format.ts";
import { AuthErrorCode } from "../auth/authority.ts";
import { SandboxError, SandboxErrorCode } from "../sandbox/errors.ts";

// One error style: every error production code throws is a class with a stable code from its
// package's catalogue (host, economy, gateway, scenarios; config/settings.ts has its one).

const ROOT = resolve(import.meta.dirname, "..");
const PRODUCTION = ["host", "economy", "functions", "gateway", "scenarios", "otel", "config", "contract", "auth", "cli", "orchestrator", "sandbox", "llm"];

/** Classes whose instances carry a catalogue code (subclasses of the packages' base errors). */
const CODED = new Set([
  "HostError", "UsageError", "NonRetriableError", "RetryAfterError", "StreamFullError",
  "EconomyError", "InsufficientFundsError", "UnknownAgentError", "InvalidAmountError", "InvalidArgumentError",
  "IdempotencyConflictError", "TickRefusedError", "MigrationError", "EmbeddedPostgresError",
  "GatewayError", "ScenarioError", "ScenarioFormatError", "SettingsError", "AuthError", "SandboxError",
]);

describe("one error style", () => {
  it("production code throws only errors with a catalogue code", () => {
    const uncoded: string[] = [];
    for (const dir of PRODUCTION) {
      for (const f of readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" }).filter((x) => x.endsWith(".ts"))) {
        const text = readFileSync(join(ROOT, dir, f), "utf8");
        for (const m of text.matchAll(/throw new ([A-Za-z]+)\(/g)) if (!CODED.has(m[1]!)) uncoded.push(`${dir}/${f}: ${m[0]}`);
      }
    }
    assert.deepEqual(uncoded, []);
  });

  it("each catalogue's codes are distinct, and the errors carry them", () => {
    const all = [...Object.values(ErrorCode), ...Object.values(EconomyErrorCode), ...Object.values(GatewayErrorCode), ...Object.values(ScenarioErrorCode), ...Object.values(AuthErrorCode), ...Object.values(SandboxErrorCode)];
    assert.equal(new Set(all).size, all.length, "a code is in two catalogues");
    assert.equal(new UsageError("--x").code, ErrorCode.Usage);
    assert.ok(new UsageError("--x") instanceof HostError);
    const pg = new EmbeddedPostgresError(EmbeddedPostgresErrorCode.Start, "no");
    assert.ok(pg instanceof EconomyError);
    assert.ok((Object.values(EconomyErrorCode) as string[]).includes(pg.code));
    assert.equal(new GatewayError(GatewayErrorCode.Config, "x", false).code, "GATEWAY_CONFIG");
    assert.equal(new ScenarioFormatError("f.json", ["(root): no"]).code, ScenarioErrorCode.Format);
    assert.equal(new SandboxError(SandboxErrorCode.EngineUnavailable, "x").code, "SANDBOX_ENGINE_UNAVAILABLE");
  });
});
