import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { databaseLogLine, openDatabase } from "../economy/db.ts";
import { effectiveDataDir } from "../economy/embeddedPostgres.ts";

// The line `npm start` logs about its database (databaseLogLine, economy/dev.ts) on a real
// embedded PostgreSQL: the directory the cluster really lives in, and initdb only when it ran.

test("npm start's database line - the real data directory; initdb reported only when it ran", async (t) => {
  const saved = process.env.DATABASE_URL;
  delete process.env.DATABASE_URL; // openDatabase would use it instead of the embedded cluster
  t.after(() => {
    if (saved !== undefined) process.env.DATABASE_URL = saved;
  });
  // mkdtemp makes the folder 0700: as root, the PostgreSQL user cannot reach it, and the cluster
  // is kept in the system temporary directory instead — the case where ".data/pg" was wrong
  const home = mkdtempSync(join(tmpdir(), "syntropism-devlog-"));
  const requested = join(home, ".data", "pg");
  const real = effectiveDataDir(requested);
  t.after(() => {
    rmSync(home, { recursive: true, force: true });
    rmSync(real, { recursive: true, force: true });
  });
  const asRoot = process.getuid?.() === 0;
  if (asRoot) assert.notEqual(real, requested, "as root, a cluster under a 0700 folder lives elsewhere");
  const where = asRoot ? { data: real, requested } : { data: requested };

  const logs: string[] = [];
  const first = await openDatabase({ dataDir: requested, migrate: false, max: 1, log: (m) => logs.push(m) });
  t.after(() => first.close());
  const created = databaseLogLine(first);
  assert.equal(created.msg, "embedded PostgreSQL running on a new cluster");
  assert.deepEqual({ ...created.fields, initdb_ms: 0, url: "" }, { url: "", ...where, pid: first.embedded!.pid, initdb: true, initdb_ms: 0 });
  assert.ok((created.fields.initdb_ms as number) > 0);
  assert.doesNotMatch(String(created.fields.url), new RegExp(first.embedded!.password), "the password is masked");
  assert.ok(logs.some((l) => l.includes(`data in ${real}`) && l.includes("new cluster: initdb")), logs.join("\n"));

  // a second `npm start` while the first runs uses that server
  const again = await openDatabase({ dataDir: requested, migrate: false, max: 1 });
  const reused = databaseLogLine(again);
  await again.close();
  assert.equal(reused.msg, "embedded PostgreSQL already running; using it");
  assert.deepEqual({ ...reused.fields, url: "" }, { url: "", ...where, pid: first.embedded!.pid, initdb: false });

  // stopped and started again: the cluster exists, so no initdb is reported or timed
  await first.close();
  logs.length = 0;
  const second = await openDatabase({ dataDir: requested, migrate: false, max: 1, log: (m) => logs.push(m) });
  t.after(() => second.close());
  assert.equal(second.embedded!.initialised, false);
  assert.equal(second.embedded!.timings.initdbMs, 0);
  const existing = databaseLogLine(second);
  assert.equal(existing.msg, "embedded PostgreSQL running on its existing cluster");
  assert.deepEqual({ ...existing.fields, url: "" }, { url: "", ...where, pid: second.embedded!.pid, initdb: false });
  assert.ok(logs.some((l) => l.includes(`data in ${real}`) && l.includes("existing cluster, no initdb")), logs.join("\n"));
  assert.ok(!logs.some((l) => /initialising|initdb \d/.test(l)), logs.join("\n"));

  // DATABASE_URL: no data directory to name
  assert.deepEqual(databaseLogLine({ url: "postgres://u:secret@db:5432/x" }), { msg: "PostgreSQL from DATABASE_URL", fields: { url: "postgres://u:***@db:5432/x" } });
});
