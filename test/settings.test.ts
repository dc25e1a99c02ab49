import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DEFAULT_MARKET, ENVIRONMENT, loadSettings, SettingsError } from "../config/settings.ts";

const ROOT = resolve(import.meta.dirname, "..");

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => join(dir, f));
}

describe("one configuration", () => {
  it("defaults without any variable, values parsed and typed", () => {
    const s = loadSettings({});
    assert.equal(s.economy.windowMs, 1000);
    assert.deepEqual(s.economy.market, DEFAULT_MARKET);
    assert.equal(s.host.workers, 1);
    assert.equal(s.nats.url, undefined);
    const t = loadSettings({ ECONOMY_WINDOW_MS: "400", WORKERS: "3", GATEWAY_VERBOSE: "true", ECONOMY_MARKET: '{"cpu":{"supply":10}}', NATS_URL: "nats://127.0.0.1:1", LOG_LEVEL: "WARN" });
    assert.equal(t.economy.windowMs, 400);
    assert.equal(t.host.workers, 3);
    assert.equal(t.gateway.verbose, true);
    assert.equal(t.economy.market.cpu.supply, 10);
    assert.equal(t.economy.market.cpu.price, DEFAULT_MARKET.cpu.price, "an override keeps the other fields");
    assert.equal(t.log.level, "warn");
  });

  it("every invalid variable is named at once, with its value and what it must be", () => {
    assert.throws(
      () => loadSettings({ ECONOMY_WINDOW_MS: "fast", WORKERS: "0", ECONOMY_MARKET: "{", DATABASE_URL: "mysql://x", ECONOMY_DB_POOL: "10" }),
      (err: unknown) => {
        assert.ok(err instanceof SettingsError);
        assert.equal(err.code, "CONFIG_ERR_INVALID");
        assert.deepEqual(err.issues.map((i) => i.env), ["DATABASE_URL", "ECONOMY_WINDOW_MS", "ECONOMY_MARKET", "WORKERS"].sort((a, b) => ENVIRONMENT.findIndex((d) => d.env === a) - ENVIRONMENT.findIndex((d) => d.env === b)));
        assert.match(err.message, /ECONOMY_WINDOW_MS \("fast"\) must be an integer/);
        assert.match(err.message, /DATABASE_URL \("mysql:\/\/x"\) must be postgres:\/\/… or postgresql:\/\/…/);
        assert.match(err.message, /ECONOMY_MARKET \("\{"\) is not JSON/);
        return true;
      },
    );
    assert.throws(() => loadSettings({ ECONOMY_MARKET: '{"gpu":{"supply":1}}' }), /ECONOMY_MARKET/);
  });

  it("docs/operations.md lists every variable with its default", () => {
    const doc = readFileSync(join(ROOT, "docs/operations.md"), "utf8");
    for (const d of ENVIRONMENT) {
      const row = doc.split("\n").find((l) => l.startsWith(`| \`${d.env}\``));
      assert.ok(row, `docs/operations.md has no row for ${d.env}`);
      assert.ok(row.includes(d.default), `the row of ${d.env} does not give its default (${d.default})`);
    }
  });

  it("no production file reads a variable but config/settings.ts", () => {
    const offenders: string[] = [];
    for (const f of ["host", "economy", "functions", "gateway", "scenarios", "otel", "contract", "sandbox", "llm"].flatMap(sources)) {
      const text = readFileSync(join(ROOT, f), "utf8");
      // passing the whole environment on (to a child process, to ${VAR} expansion) is not reading a variable
      for (const m of text.matchAll(/process\.env(?:\.([A-Za-z_]+)|\[)/g)) {
        if (m[1] === "PATH" && f === "host/natsServer.ts") continue; // the system's search path for nats-server
        offenders.push(`${f}: ${m[0]}`);
      }
    }
    assert.deepEqual(offenders, []);
  });
});
