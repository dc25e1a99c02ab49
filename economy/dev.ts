import { createLogger } from "../host/log.ts";
import { main } from "../cli/host.ts";
import { loadSettings } from "../config/settings.ts";
import { databaseLogLine, openDatabase } from "./db.ts";

// `npm start`: the whole economy on embedded defaults — PostgreSQL (embedded, data in .data/pg,
// unless DATABASE_URL names a server), then `host dev` (a local nats-server unless NATS_URL, the
// streams applied, every function in functions/ hot-reloaded).

const settings = loadSettings();
const log = createLogger({ level: settings.log.level, bindings: { service: "economy" } });
const db = await openDatabase({ url: settings.economy.databaseUrl, log: (m) => log.info({}, m), ownProcessGroup: true });
await db.sql.end({ timeout: 5 });
const line = databaseLogLine(db);
log.info(line.fields, line.msg);

let code = 1;
try {
  code = await main(["dev", ...process.argv.slice(2)], { settings: { ...settings, economy: { ...settings.economy, databaseUrl: db.url } } });
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
} finally {
  // last, after `host dev` has stopped the functions that use it and then nats-server; Ctrl-C
  // does not reach it directly (its own process group: spawnLocalServer in host/natsServer.ts)
  if (db.embedded) {
    await db.embedded.stop();
    log.info({ pid: db.embedded.pid }, "embedded PostgreSQL stopped");
  }
}
process.exit(code);
