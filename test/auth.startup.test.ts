import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { decode } from "@nats-io/jwt";
import { windowCredentialsExpiry } from "../auth/resource.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Authority, AuthErrorCode } from "../auth/authority.ts";
import { startTestNats, suiteScope, type TestNats } from "../testing/nats.ts";
import { runCli } from "../testing/cli.ts";
import { FIXTURE_CONFIG } from "./helpers/host.ts";

// Bad credentials, a stale .data/auth and a missing key each stop a component at start-up with a
// message that says what is wrong and what to do.

describe("authentication at start-up", () => {
  const scope = suiteScope(after);
  const made: string[] = [];
  let nats: TestNats;
  after(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const folder = () => {
    const d = mkdtempSync(join(tmpdir(), "syntropism-auth-"));
    made.push(d);
    return d;
  };

  before(async () => {
    nats = await startTestNats(scope, { auth: true });
  });

  it("creates the identities once and loads the same ones afterwards", async () => {
    const dir = join(folder(), "auth");
    const a = await Authority.open(dir, { create: true });
    const b = await Authority.open(dir, { create: true });
    assert.equal(b.accountPublicKey, a.accountPublicKey);
    assert.equal(b.manifest.operator, a.manifest.operator);
  });

  it("refuses a folder with a missing key, naming the file", async () => {
    const dir = join(folder(), "auth");
    await Authority.open(dir, { create: true });
    unlinkSync(join(dir, "agent-signer.nk"));
    await assert.rejects(Authority.open(dir, { create: true }), (err: Error & { code?: string }) => {
      assert.equal(err.code, AuthErrorCode.MissingKey);
      assert.match(err.message, /agent-signer\.nk is missing/);
      assert.match(err.message, /delete .* to create new keys/);
      return true;
    });
  });

  it("refuses a stale folder: keys of one set, JWTs of another", async () => {
    const root = folder();
    await Authority.open(join(root, "one"), { create: true });
    await Authority.open(join(root, "two"), { create: true });
    cpSync(join(root, "two", "account.jwt"), join(root, "one", "account.jwt"));
    await assert.rejects(Authority.open(join(root, "one")), (err: Error & { code?: string }) => {
      assert.equal(err.code, AuthErrorCode.Stale);
      assert.match(err.message, /account\.jwt does not belong/);
      return true;
    });
    writeFileSync(join(root, "two", "auth.json"), JSON.stringify({ version: 99 }));
    await assert.rejects(Authority.open(join(root, "two")), /auth version 99/);
  });

  it("says where there are no identities yet, and how to make them", async () => {
    await assert.rejects(Authority.open(join(folder(), "nothing")), /run `npm start` or `npm run host -- dev` once/);
  });

  it("a CLI with a malformed credentials file names it; with another server's credentials says they were refused", async () => {
    const dir = folder();
    const bad = join(dir, "bad.creds");
    writeFileSync(bad, "not a credentials file");
    const r1 = await runCli(["status", "--config", FIXTURE_CONFIG], { NATS_URL: nats.url, NATS_CREDS: bad });
    assert.notEqual(r1.code, 0);
    assert.match(r1.stderr, /bad\.creds is not a NATS credentials file/);

    const other = await Authority.open(join(dir, "other"), { create: true });
    const r2 = await runCli(["status", "--config", FIXTURE_CONFIG], { NATS_URL: nats.url, NATS_CREDS: other.credsFile("admin") });
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /refused the credentials in .*admin\.creds/);

    const r3 = await runCli(["status", "--config", FIXTURE_CONFIG], { NATS_URL: nats.url, NATS_CREDS: "" });
    assert.notEqual(r3.code, 0);
    assert.match(r3.stderr, /requires authentication .*set NATS_CREDS/);

    const ok = await runCli(["status", "--config", FIXTURE_CONFIG], { NATS_URL: nats.url, NATS_CREDS: nats.auth!.credsFile("admin") });
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(readFileSync(nats.auth!.credsFile("admin"), "utf8").length > 0);
  });

  it("host auth init, then auth agent: credentials (0600) until the end of the current window plus the grace, that the server takes", async () => {
    const cwd = folder();
    const init = await runCli(["auth", "init"], {}, { cwd });
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /\.data\/auth: operator O[A-Z0-9]+, account A[A-Z0-9]+/);
    const out = join(cwd, "zed.creds");
    const t = Date.now();
    const r = await runCli(["auth", "agent", "zed", "--out", out], { ECONOMY_WINDOW_MS: "60000" }, { cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(statSync(out).mode & 0o777, 0o600);
    const jwt = /-----BEGIN NATS USER JWT-----\n(.+)\n/.exec(readFileSync(out, "utf8"))![1]!;
    const claims = decode<{ pub: { allow: string[] } }>(jwt);
    assert.equal(claims.exp, windowCredentialsExpiry(Math.floor(t / 60_000), 60_000).getTime() / 1000);
    assert.equal(claims.name, "agent:zed");
    assert.ok(claims.nats.pub?.allow?.includes("market.bid.zed"));
    assert.match(r.stderr, /agent zed \(U[A-Z0-9]+\), valid until .*, inbox prefix _INBOX\.zed/);
    const bad = await runCli(["auth", "agent", "a.b"], {}, { cwd });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /invalid subject.*agent id "a\.b"/);
  });

  it("host start with refused credentials exits at once with the reason, rather than retrying forever", async () => {
    const other = await Authority.open(join(folder(), "other"), { create: true });
    const r = await runCli(["start", "--config", FIXTURE_CONFIG, "--apply"], { NATS_URL: nats.url, NATS_CREDS: other.credsFile("service") }, { timeoutMs: 30_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /refused the credentials/);
  });
});
