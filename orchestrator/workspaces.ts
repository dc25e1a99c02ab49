import { cpSync, existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineResource } from "syntropism";
import { settingsOf } from "../config/settings.ts";
import * as v from "valibot";
import { subjectToken } from "../contract/subjects.ts";
import { templateName } from "../economy/workspaces.ts";

// An agent is a program in a workspace folder: `<root>/<agent id>`, created from a template at
// genesis and at spawn (a child starts from its parent's template unless the spawn names one) and
// recorded in the `workspaces` table. Templates are folders in agent/templates; `default` holds
// no program, so the image's default agent runs. The folder is mounted at /workspace in the
// agent's sandbox; env.json and the credentials are written into it before each run.

export const TEMPLATES_DIR = fileURLToPath(new URL("../agent/templates/", import.meta.url));
export const DEFAULT_TEMPLATE = "default";

/** True when `name` is a token naming a folder in agent/templates. */
export function templateExists(name: string, dir = TEMPLATES_DIR): boolean {
  return v.is(templateName, name) && existsSync(join(dir, name));
}

/** Where agent `agentId`'s workspace lives under `root`. */
export function workspacePath(root: string, agentId: string): string {
  return join(resolve(root), subjectToken(agentId, "agent id"));
}

/**
 * The agent's workspace, made from `template` when it does not exist yet (an existing one is kept
 * as it is: what the agent wrote stays for its next run). Returns its absolute path.
 */
export function ensureWorkspace(root: string, agentId: string, template: string, dir = TEMPLATES_DIR): string {
  const path = workspacePath(root, agentId);
  if (existsSync(path)) return path;
  mkdirSync(resolve(root), { recursive: true });
  const from = join(dir, template);
  if (existsSync(from)) cpSync(from, path, { recursive: true });
  else mkdirSync(path, { recursive: true });
  return path;
}

/** The workspaces folder as a host resource: functions that create agents make their folders. */
export const workspaces = defineResource({
  name: "workspaces",
  setup: (ctx) => {
    const root = resolve(settingsOf(ctx.settings).agents.workspaces);
    return { root, ensure: (agentId: string, template: string) => ensureWorkspace(root, agentId, template) };
  },
});
