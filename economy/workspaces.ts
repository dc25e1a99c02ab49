import * as v from "valibot";
import type { Db, TransactionSql } from "./db.ts";

// The `workspaces` table: which template each agent's workspace was made from. The folder itself
// is the orchestrator's (orchestrator/workspaces.ts); its path, relative to AGENT_WORKSPACES, is
// the agent id.

export const templateName = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/, "a template name: letters, digits, _ and -"));

export async function recordWorkspace(tx: TransactionSql, agentId: string, template: string): Promise<void> {
  await tx`INSERT INTO workspaces (agent_id, path, template) VALUES (${agentId}, ${agentId}, ${template}) ON CONFLICT (agent_id) DO NOTHING`;
}

/** The template an agent's workspace was made from ("default" for agents from before templates). */
export async function workspaceTemplate(db: Db, agentId: string): Promise<string> {
  const [row] = await db<{ template: string }[]>`SELECT template FROM workspaces WHERE agent_id = ${agentId}`;
  return row?.template ?? "default";
}
