import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describeNats, resolveNats } from "../host/configFile.ts";
import { nextFreePort } from "../host/natsServer.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS, ROOT, runCli, runNode, startCli, waitFor, type RunResult } from "./helpers/host.ts";

// The CLIs find the stack `npm start` runs through .data/nats.url (resolveNats), say on stderr
// which server they use and why, and name the streams a server lacks.

const made: string[] = [];
after(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A folder like a checkout in which `npm start` runs: .data/nats.url names `url`. */
function stackFolder(url?: string): string {
  const cwd = mkdtempSync(join(tmpdir(), "syntropism-cwd-"));
  made.push(cwd);
  if (url !== undefined) {
    mkdirSync(join(cwd, ".data"));
    writeFileSync(join(cwd, ".data", "nats.url"), `${url}\n`);
  }
  return cwd;
}

const natsLines = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("nats: "));
const noNatsUrl = { NATS_URL: "", LOG_LEVEL: "warn" };

/** Runs a TypeScript CLI (economy/cli.ts, scenarios' bin) to completion in `cwd`. */
function runTs(args: string[], cwd: string, env: Record<string, string>): Promise<RunResult> {
  // tsx by its resolved URL: a bare "tsx" would be looked up from `cwd`, outside the checkout
  return runNode(["--import", import.meta.resolve("tsx"), ...args], env, { cwd });
}

describe("resolveNats", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  before(async () => {
    nats = await startTestNats(hooks);
  });

  it("NATS_URL first, then .data/nats.url when a server answers there, else the default", async () => {
    const cwd = stackFolder(nats.url);
    assert.deepEqual(await resolveNats({ env: { NATS_URL: "nats://elsewhere:4222" }, cwd }), { url: "nats://elsewhere:4222", source: "NATS_URL" });
    assert.deepEqual(await resolveNats({ env: {}, cwd }), { url: nats.url, source: ".data/nats.url" });
    assert.deepEqual(await resolveNats({ env: {}, cwd: stackFolder() }), { url: "nats://127.0.0.1:4222", source: "default" });
  });

  it("passes over a stale .data/nats.url — nothing listening, or something that is not NATS — and says so", async () => {
    const closed = `nats://127.0.0.1:${await nextFreePort()}`;
    const stale = await resolveNats({ env: {}, cwd: stackFolder(closed) });
    assert.equal(stale.source, "default");
    assert.equal(stale.url, "nats://127.0.0.1:4222");
    assert.equal(describeNats(stale), `nats: nats://127.0.0.1:4222 (default; .data/nats.url names ${closed}, where no NATS server answers)`);

    // a listener that accepts but never greets with INFO (an HTTP server, say) is not a NATS server
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    hooks.after(async () => void silent.close());
    const port = (silent.address() as { port: number }).port;
    const quiet = await resolveNats({ env: {}, cwd: stackFolder(`nats://127.0.0.1:${port}`), probeMs: 300 });
    assert.equal(quiet.source, "default");
  });
});

describe("the CLIs talk to the server in .data/nats.url", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let cwd: string;
  before(async () => {
    nats = await startTestNats(hooks);
    cwd = stackFolder(nats.url);
  });

  it("host status on a server without the streams: one `nats:` line, and which streams are missing where, and what to run", async () => {
    const r = await runCli(["status", "--config", FIXTURE_CONFIG, "--functions", FIXTURE_FUNCTIONS], noNatsUrl, { cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(natsLines(r.stderr), [`nats: ${nats.url} (from .data/nats.url)`]);
    assert.ok(
      r.stderr.includes(`streams JOBS, OUT, SMALL, DEAD_LETTERS do not exist on ${nats.url} (from .data/nats.url). Create them with \`npm run host -- streams apply --config ${FIXTURE_CONFIG}\``),
      r.stderr,
    );

    const dlq = await runCli(["dlq", "ls", "--config", FIXTURE_CONFIG], noNatsUrl, { cwd });
    assert.equal(dlq.code, 1);
    assert.match(dlq.stderr, /HOST_ERR_STREAM_MISSING: streams JOBS, OUT, SMALL, DEAD_LETTERS do not exist on nats:\/\/127\.0\.0\.1:\d+ \(from \.data\/nats\.url\)/);
    assert.doesNotMatch(dlq.stderr, /^host: 10059: stream not found/m);

    const audit = await runCli(["audit", "verify"], noNatsUrl, { cwd });
    assert.equal(audit.code, 1);
    assert.match(audit.stderr, /stream AUDIT does not exist on nats:\/\/127\.0\.0\.1:\d+ \(from \.data\/nats\.url\)\. Create it with `npm run host -- streams apply`, or start the stack with `npm start`/);
  });

  it("host streams apply from that folder creates the streams on that server; then status has nothing missing", async () => {
    const r = await runCli(["streams", "apply", "--config", FIXTURE_CONFIG], noNatsUrl, { cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(natsLines(r.stderr), [`nats: ${nats.url} (from .data/nats.url)`]);
    assert.equal((await nats.jsm.streams.info("JOBS")).config.name, "JOBS");
    const status = await runCli(["status", "--config", FIXTURE_CONFIG], noNatsUrl, { cwd });
    assert.equal(status.code, 0);
    assert.doesNotMatch(status.stderr, /do not exist|does not exist/);
  });

  it("NATS_URL wins over .data/nats.url", async () => {
    const other = stackFolder(`nats://127.0.0.1:${await nextFreePort()}`);
    const r = await runCli(["status", "--config", FIXTURE_CONFIG], { NATS_URL: nats.url }, { cwd: other });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(natsLines(r.stderr), [`nats: ${nats.url} (from NATS_URL)`]);
  });

  it("npm run economy -- reward grant publishes to that server and names it", async () => {
    await nats.jsm.streams.add({ name: "REWARDS_SEEN", subjects: ["admin.reward.grant"] });
    const r = await runTs([resolve(ROOT, "economy/cli.ts"), "reward", "grant", "--agent", "alice", "--amount", "2"], cwd, noNatsUrl);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(natsLines(r.stderr), [`nats: ${nats.url} (from .data/nats.url)`]);
    const info = await nats.jsm.streams.info("REWARDS_SEEN");
    assert.equal(info.state.messages, 1);
    const m = await nats.jsm.streams.getMessage("REWARDS_SEEN", { seq: info.state.last_seq });
    assert.equal(m?.json<{ agent_id: string }>().agent_id, "alice");
  });

  it("npm run scenario -- replay reads that server's AUDIT stream", async () => {
    await nats.jsm.streams.add({ name: "AUDIT", subjects: ["cli-test.audit.>"] });
    const r = await runTs([resolve(ROOT, "bin/scenario.mjs"), "replay", "er001-nosuchrun", "--scenario", "er001"], cwd, noNatsUrl);
    assert.equal(r.code, 2);
    assert.deepEqual(natsLines(r.stderr), [`nats: ${nats.url} (from .data/nats.url)`]);
    // it reached the server: the empty AUDIT stream there has no such run
    assert.match(r.stderr, /no event in AUDIT has correlation_id er001-nosuchrun/);
  });
});

describe("host dev and .data/nats.url", () => {
  const hooks = suiteScope(after);

  it("host dev writes the file, a CLI in the same folder uses it, and it is gone once dev stops", async () => {
    const cwd = stackFolder();
    const dev = startCli(hooks, ["dev", "--config", FIXTURE_CONFIG, "--functions", FIXTURE_FUNCTIONS], { NATS_URL: "", LOG_LEVEL: "info" }, { cwd });
    const url = await waitFor("printed NATS URL", () => /NATS\s+(nats:\/\/[\d.]+:\d+)/.exec(dev.output())?.[1], 30_000);
    const file = join(cwd, ".data", "nats.url");
    assert.equal(readFileSync(file, "utf8").trim(), url);

    const status = await runCli(["status", "--config", FIXTURE_CONFIG], noNatsUrl, { cwd });
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual(natsLines(status.stderr), [`nats: ${url} (from .data/nats.url), credentials .data/auth/admin.creds`]);
    assert.match(status.stdout, /jobs\/record/, "status did not see the dev stack's functions");

    assert.equal((await dev.stop("SIGINT")).code, 0, dev.output());
    assert.equal(existsSync(file), false, ".data/nats.url outlived host dev");
  });
});
