import { chownSync, lstatSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { SandboxError, SandboxErrorCode } from "./errors.ts";

// The execution's workspace: a host folder the caller filled (env.json, credentials, maybe
// agent.mjs), checked before launch and, for an isolated driver, handed to the sandbox's user.

export function checkWorkspace(dir: string): void {
  let isDir = false;
  let why = "not a folder";
  try {
    isDir = statSync(dir).isDirectory();
  } catch (err) {
    why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
  if (!isDir) throw new SandboxError(SandboxErrorCode.InvalidSpec, `workspace ${dir}: ${why}`);
}

/** chown -R (symbolic links left alone: they could point anywhere on the host). */
export function chownTree(dir: string, uid: number): void {
  try {
    chownSync(dir, uid, uid);
    for (const f of readdirSync(dir, { recursive: true, encoding: "utf8" })) {
      const p = join(dir, f);
      if (!lstatSync(p).isSymbolicLink()) chownSync(p, uid, uid);
    }
  } catch (err) {
    throw new SandboxError(SandboxErrorCode.Workspace, `cannot hand ${dir} to uid ${uid}: ${(err as Error).message} (the Docker driver runs as root)`, { cause: err });
  }
}
