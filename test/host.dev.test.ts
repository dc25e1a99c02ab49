import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connect, credsAuthenticator } from "@nats-io/transport-node";
import { discoverFunctions } from "../host/loader.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS, ROOT, startCli, waitFor } from "./helpers/host.ts";

// Discovery, `host dev` hot reload, and the local stack `npm start` brings up.

const MOD = resolve(ROOT, "host/mod.ts");

function functionFile(subject: string, reply: string): string {
  return `import { defineFunction } from ${JSON.stringify(MOD)};
export default defineFunction({
  trigger: { type: "request", subject: ${JSON.stringify(subject)} },
  handler: () => ({ reply: ${JSON.stringify(reply)} }),
});
`;
}

const made: string[] = [];
after(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

function tmpFunctions(): string {
  const dir = mkdtempSync(join(tmpdir(), "syntropism-fns-"));
  made.push(dir);
  writeFileSync(join(dir, "package.json"), '{ "type": "module" }\n');
  return dir;
}

describe("discovery", () => {
  it("walks functions/ in sorted order, ids from paths, skipping tests, dotfiles and _helpers", () => {
    const found = discoverFunctions(FIXTURE_FUNCTIONS).map((f) => f.id);
    assert.deepEqual(found, ["jobs/crashy", "jobs/fill", "jobs/limited", "jobs/once", "jobs/record", "jobs/throttled", "jobs/work", "reqs/echo", "sched/tick", "tr/entry", "tr/step1", "tr/step2"]);
    const dir = tmpFunctions();
    mkdirSync(join(dir, "b"));
    mkdirSync(join(dir, "a"));
    mkdirSync(join(dir, ".hidden"));
    mkdirSync(join(dir, "__tests__"));
    for (const f of ["b/z.ts", "b/a.ts", "a/m.mjs", "top.ts", ".hidden/x.ts", "__tests__/t.ts", "a/m.test.ts", "a/n.spec.ts", "a/_util.ts", "a/types.d.ts", ".dot.ts", "notes.md"]) {
      writeFileSync(join(dir, f), "export default 1;\n");
    }
    assert.deepEqual(discoverFunctions(dir).map((f) => f.id), ["a/m", "b/a", "b/z", "top"]);
    writeFileSync(join(dir, "top.js"), "export default 1;\n");
    assert.throws(() => discoverFunctions(dir), /top/);
  });
});

describe("host dev", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  before(async () => {
    nats = await startTestNats(hooks);
  });

  it("hot-reloads added, changed, removed and broken files without a restart", async () => {
    const dir = tmpFunctions();
    writeFileSync(join(dir, "first.ts"), functionFile("dev.first", "one"));
    const dev = startCli(hooks, ["dev", "--config", FIXTURE_CONFIG, "--functions", dir], { NATS_URL: nats.url, LOG_LEVEL: "info" });
    await waitFor("dev stack up", () => dev.output().includes("Syntropism dev stack") || undefined, 30_000);
    const ask = async (subject: string) => (await nats.nc.request(subject, "", { timeout: 1000 })).json<{ reply: string }>().reply;
    assert.equal(await ask("dev.first"), "one");

    mkdirSync(join(dir, "more"));
    writeFileSync(join(dir, "more", "second.ts"), functionFile("dev.second", "two"));
    assert.equal(await waitFor("added function answers", () => ask("dev.second").catch(() => undefined)), "two");

    writeFileSync(join(dir, "first.ts"), functionFile("dev.first", "one, edited"));
    assert.equal(await waitFor("edited function answers", async () => ((await ask("dev.first")) === "one, edited" ? "ok" : undefined)), "ok");

    rmSync(join(dir, "more", "second.ts"));
    await waitFor("removed function stops answering", () => ask("dev.second").then(() => undefined, (err: Error) => /no responders|503/i.test(String(err.message) + String((err as { code?: string }).code)) || undefined));

    writeFileSync(join(dir, "first.ts"), "export default { broken\n");
    await dev.waitForLog("load failure reported", (l) => l.msg === "could not load function; keeping the previous version");
    assert.equal(await ask("dev.first"), "one, edited", "a broken edit took the previous version down");
    assert.equal(dev.child.exitCode, null);
    assert.equal((await dev.stop("SIGINT")).code, 0);
  });

  it("names an edited module that function files import, which a reload does not pick up", async () => {
    const root = tmpFunctions();
    mkdirSync(join(root, "functions"));
    mkdirSync(join(root, "lib"));
    writeFileSync(join(root, "lib", "shared.ts"), 'export const word = "one";\n');
    writeFileSync(
      join(root, "functions", "uses.ts"),
      `import { defineFunction } from ${JSON.stringify(MOD)};
import { word } from "../lib/shared.ts";
export default defineFunction({ trigger: { type: "request", subject: "dev.uses" }, handler: () => ({ reply: word }) });
`,
    );
    const dev = startCli(hooks, ["dev", "--config", FIXTURE_CONFIG, "--functions", join(root, "functions")], { NATS_URL: nats.url, LOG_LEVEL: "info" });
    await waitFor("dev stack up", () => dev.output().includes("Syntropism dev stack") || undefined, 30_000);
    writeFileSync(join(root, "lib", "shared.ts"), 'export const word = "two";\n');
    const line = await dev.waitForLog("the edit named", (l) => l.file === join("lib", "shared.ts"));
    assert.equal(line.level, "warn");
    assert.match(String(line.msg), /takes effect after a restart/);
    // a function file's own edit reloads, and is not reported as needing a restart
    writeFileSync(join(root, "functions", "uses.ts"), readFileSync(join(root, "functions", "uses.ts"), "utf8").replace("reply: word", 'reply: word + "!"'));
    const reply = await waitFor("edited function answers", async () => {
      const r = (await nats.nc.request("dev.uses", "", { timeout: 1000 })).json<{ reply: string }>().reply;
      return r.endsWith("!") ? r : undefined;
    });
    assert.equal(reply, "one!", "the shared module stays as loaded until a restart, as the line said");
    assert.ok(!dev.logs().some((l) => String(l.file ?? "").includes("uses.ts")));
    assert.equal((await dev.stop("SIGINT")).code, 0);
  });

  it("says exactly how to get nats-server when it is missing", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "syntropism-stack-"));
    made.push(cwd);
    const dev = startCli(hooks, ["dev", "--config", FIXTURE_CONFIG, "--functions", FIXTURE_FUNCTIONS], { NATS_URL: "", NATS_SERVER_BIN: join(cwd, "no-such-nats-server") }, { cwd });
    const { code } = await dev.exited;
    assert.equal(code, 1);
    assert.match(dev.output(), /HOST_ERR_NATS_SERVER_MISSING/);
    assert.match(dev.output(), /apt-get install -y nats-server/);
    assert.match(dev.output(), /NATS_URL/);
  });

  it("without NATS_URL starts its own nats-server with data in .data/, on a free port when 4222 is taken", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "syntropism-stack-"));
    made.push(cwd);
    const dir = tmpFunctions();
    writeFileSync(join(dir, "hello.ts"), functionFile("stack.hello", "hi"));
    // occupy 4222 if it is free, so the free-port path runs either way
    const { createServer } = await import("node:net");
    const blocker = createServer();
    await new Promise<void>((r) => blocker.once("error", () => r()).listen(4222, "127.0.0.1", () => r()));
    hooks.after(async () => void blocker.close());
    const dev = startCli(hooks, ["dev", "--config", FIXTURE_CONFIG, "--functions", dir], { NATS_URL: "", LOG_LEVEL: "info" }, { cwd });
    const url = await waitFor("printed NATS URL", () => /NATS\s+(nats:\/\/[\d.]+:\d+)/.exec(dev.output())?.[1], 30_000);
    assert.notEqual(new URL(url).port, "4222");
    assert.match(dev.output(), /4222 is taken/);
    // authentication is on: an anonymous client is refused, the operator's credentials in .data/auth work
    await assert.rejects(connect({ servers: url, reconnect: false }), /Authorization Violation/);
    assert.match(dev.output(), /--creds \.data\/auth\/admin\.creds/, "the printed tour names the credentials");
    const creds = readFileSync(join(cwd, ".data", "auth", "admin.creds"));
    const nc = await connect({ servers: url, authenticator: credsAuthenticator(creds) });
    try {
      assert.equal((await nc.request("stack.hello", "", { timeout: 2000 })).json<{ reply: string }>().reply, "hi");
      const jsm = await (await import("@nats-io/jetstream")).jetstreamManager(nc);
      assert.equal((await jsm.streams.info("JOBS")).config.name, "JOBS", "streams were not applied");
    } finally {
      await nc.close();
    }
    assert.ok(existsSync(join(cwd, ".data", "nats", "jetstream")), "JetStream data is not under .data/nats");
    assert.equal((await dev.stop("SIGINT")).code, 0);
    // the local server went down with it
    await assert.rejects(connect({ servers: url, reconnect: false, timeout: 1000 }));
  });

  it("--no-auth runs the local server without authentication, and says so loudly", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "syntropism-stack-"));
    made.push(cwd);
    const dir = tmpFunctions();
    writeFileSync(join(dir, "hello.ts"), functionFile("open.hello", "open"));
    const dev = startCli(hooks, ["dev", "--no-auth", "--config", FIXTURE_CONFIG, "--functions", dir], { NATS_URL: "", LOG_LEVEL: "info" }, { cwd });
    const url = await waitFor("printed NATS URL", () => /NATS\s+(nats:\/\/[\d.]+:\d+)/.exec(dev.output())?.[1], 30_000);
    assert.match(dev.output(), /AUTHENTICATION IS OFF \(--no-auth\)/);
    assert.equal(existsSync(join(cwd, ".data", "auth")), false, "no identities are created");
    const nc = await connect({ servers: url });
    try {
      assert.equal((await nc.request("open.hello", "", { timeout: 2000 })).json<{ reply: string }>().reply, "open");
    } finally {
      await nc.close();
    }
    assert.equal((await dev.stop("SIGINT")).code, 0);
  });
});
