import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { ROOT, startHost } from "./helpers/host.ts";
import { parseConfig } from "../host/config.ts";

// Resources (host/resource.ts, docs/host.md "Resources"): shared ones set up once per host and
// released after every trigger, in reverse order of setup; a function's own setup released when it
// stops, reloads or is removed; failures and cycles named. The functions below record what happens
// in a journal the test reads (globalThis.__journal).

const MOD = pathToFileURL(resolve(ROOT, "host/mod.ts")).href;
type Journal = string[];
const journal = (): Journal => ((globalThis as { __journal?: Journal }).__journal ??= []);

const RESOURCES = `
import { defineResource } from "${MOD}";
const j = () => (globalThis.__journal ??= []);
let n = 0;
export const pool = defineResource({ name: "pool", setup: () => { j().push("setup pool"); return { id: ++n }; }, release: (v) => { j().push("release pool " + v.id); } });
export const cache = defineResource({ name: "cache", setup: async (ctx) => { const p = await ctx.use(pool); j().push("setup cache on pool " + p.id); return { pool: p }; }, release: () => { j().push("release cache"); } });
export const a = defineResource({ name: "a", setup: (ctx) => ctx.use(b) });
export const b = defineResource({ name: "b", setup: (ctx) => ctx.use(a) });
`;

function fn(name: string, body: string): string {
  return `
import { defineFunction } from "${MOD}";
import { pool, cache } from "../_resources.mjs";
const j = () => (globalThis.__journal ??= []);
export default defineFunction({
  trigger: { type: "request", subject: "res.${name}" },
  resources: { pool, cache },
  ${body}
});
`;
}

describe("resources", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let dir: string;
  const config = parseConfig({});
  before(async () => {
    nats = await startTestNats(hooks);
    dir = mkdtempSync(join(tmpdir(), "syntropism-res-"));
    hooks.after(async () => rmSync(dir, { recursive: true, force: true }));
  });

  it("shared once per host, a function's own per function, released in reverse order after the triggers", async () => {
    journal().length = 0;
    const fns = join(dir, "one");
    writeFileSync(join(dir, "_resources.mjs"), RESOURCES);
    const { mkdirSync } = await import("node:fs");
    mkdirSync(fns, { recursive: true });
    writeFileSync(join(dir, "one", "_resources.mjs"), `export * from "../_resources.mjs";`);
    const own = `setup: ({ resources }) => { j().push("setup own " + resources.pool.id); return { counter: { n: 0 } }; },
  release: (local) => { j().push("release own after " + local.counter.n); },
  handler: (_p, ctx) => ({ pool: ctx.resources.pool.id, same: ctx.resources.cache.pool === ctx.resources.pool, n: ++ctx.resources.counter.n }),`;
    writeFileSync(join(fns, "first.mjs"), fn("first", own).replace("../_resources.mjs", "./_resources.mjs"));
    writeFileSync(join(fns, "second.mjs"), fn("second", `handler: (_p, ctx) => ({ pool: ctx.resources.pool.id }),`).replace("../_resources.mjs", "./_resources.mjs"));

    const h1 = await startHost(hooks, nats, { functionsDir: fns, config });
    const h2 = await startHost(hooks, nats, { functionsDir: fns, config, name: "second-host" });
    const r1 = (await nats.nc.request("res.first", "", { timeout: 5000 })).json<{ pool: number; same: boolean; n: number }>();
    assert.equal(r1.same, true, "the cache's pool is the pool the function gets");
    assert.deepEqual(journal().filter((l) => l === "setup pool").length, 2, "one pool per host, not per function nor per process");
    assert.deepEqual(journal().filter((l) => l.startsWith("setup own")).length, 2, "the function's own setup, once per host");

    // a reload of the file: the new version is set up before the old one is released
    journal().length = 0;
    const later = new Date(Date.now() + 5000);
    utimesSync(join(fns, "first.mjs"), later, later);
    const reloaded = await h1.host.reload();
    assert.deepEqual(reloaded.changed, ["first"]);
    assert.equal(journal().length, 2, JSON.stringify(journal()));
    assert.match(journal()[0]!, /^setup own \d+$/, "the new version first");
    assert.match(journal()[1]!, /^release own after \d+$/, "then the old version is released");
    assert.ok(!journal().some((l) => l.includes("pool")), "shared resources stay across a function's reload");

    journal().length = 0;
    await h2.host.stop();
    await h1.host.stop();
    // per host: the functions' own releases, then cache (set up last), then pool
    const order = journal().filter((l) => !l.startsWith("release own"));
    assert.deepEqual(order.map((l) => l.replace(/ \d+$/, "")), ["release cache", "release pool", "release cache", "release pool"]);
    const firstOwn = journal().findIndex((l) => l.startsWith("release own"));
    assert.ok(firstOwn >= 0 && firstOwn < journal().indexOf("release cache"), "a function's own release comes before the shared ones");
  });

  it("a setup that fails stops start-up naming the file; a cycle is named", async () => {
    const bad = join(dir, "bad");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(bad, { recursive: true });
    writeFileSync(join(bad, "broken.mjs"), `import { defineFunction } from "${MOD}";
export default defineFunction({ trigger: { type: "request", subject: "res.broken" }, setup: () => { throw new Error("no licence key"); }, handler: () => 1 });`);
    await assert.rejects(startHost(hooks, nats, { functionsDir: bad, config }), (err: Error & { code?: string }) => {
      assert.equal(err.code, "HOST_ERR_RESOURCE_SETUP");
      assert.match(err.message, /broken\.mjs: setup failed: no licence key/);
      return true;
    });
    const cyc = join(dir, "cycle");
    mkdirSync(cyc, { recursive: true });
    writeFileSync(join(cyc, "loop.mjs"), `import { defineFunction } from "${MOD}";
import { a } from "../_resources.mjs";
export default defineFunction({ trigger: { type: "request", subject: "res.loop" }, resources: { a }, handler: () => 1 });`);
    await assert.rejects(startHost(hooks, nats, { functionsDir: cyc, config }), /cycle: loop → a → b → a/);
  });
});
