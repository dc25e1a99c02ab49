import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadConfigFile } from "../../host/configFile.ts";
import { loadSettings } from "../../config/settings.ts";
import { startTestNats } from "../../testing/nats.ts";
import { startTestDatabase } from "../../testing/postgres.ts";
import { ROOT, startHost, waitFor } from "./host.ts";

// A stack for the orchestrator's suites: nats-server with authentication, PostgreSQL, the project's
// functions in a host with short windows, the agents' workspaces in a temporary folder.

export const WINDOW_MS = 2000;
const enc = (v: unknown) => JSON.stringify(v);

type Execution = { id: string; agent_id: string; window_id: string; status: string; reason: string | null; exit_code: number | null; sandbox: string; output_tail: string | null; limits: Record<string, number>; usage: Record<string, number | null> };

export async function orchestratorStack(hooks: { after: (fn: () => Promise<void>) => void }, env: Record<string, string>) {
  const nats = await startTestNats(hooks, { auth: true });
  const db = await startTestDatabase(hooks);
  const workspaces = mkdtempSync(join(tmpdir(), "syntropism-orch-"));
  hooks.after(async () => rmSync(workspaces, { recursive: true, force: true }));
  const settings = loadSettings({
    DATABASE_URL: db.url,
    ECONOMY_WINDOW_MS: String(WINDOW_MS),
    LOG_LEVEL: "warn",
    NATS_URL: nats.url,
    NATS_AUTH_DIR: nats.auth!.authority.dir,
    AGENT_WORKSPACES: workspaces,
    AGENT_STOP_GRACE_MS: "300",
    ...env,
  });
  const config = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
  const start = () => startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config, settings });
  const { host, lines } = await start();
  const execution = (agent: string, done = true) =>
    waitFor(`${agent}'s execution${done ? " to end" : ""}`, async () => {
      const [row] = await db.sql<Execution[]>`SELECT id, agent_id, window_id, status, reason, exit_code, sandbox, output_tail, limits, usage FROM executions WHERE agent_id = ${agent} ORDER BY id DESC LIMIT 1`;
      return row && (!done || !["pending", "running"].includes(row.status)) ? row : undefined;
    }, 30_000);
  const fund = async (agents: string[]) => {
    for (const a of agents) await nats.js.publish("admin.genesis", enc({ agent_id: a, credits: 100 }));
    await waitFor("agents funded", async () => ((await db.sql`SELECT count(*)::int AS n FROM workspaces WHERE agent_id IN ${db.sql(agents)}`)[0]!.n === agents.length ? true : undefined));
  };
  const bid = (agent: string, cpu: number, memory: number, price: number) => nats.js.publish(`market.bid.${agent}`, enc({ bundle: { cpu, memory }, price }));
  return { nats, db, workspaces, host, start, lines, execution, fund, bid };
}

