import { readdirSync, statSync } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { isFunctionDefinition, type FunctionDefinition } from "./define.ts";
import { ErrorCode, HostError, coerceError } from "./errors.ts";

// Discovery: functions/ is walked in sorted order; each module file is one function whose id is
// its path without extension (`market/placeBid`). Skipped: dotfiles and dot-folders, names
// starting with `_` (shared helpers), tests (`*.test.*`, `*.spec.*`, `__tests__/`) and type
// declarations. A file that is not a valid definition stops start-up with its path and the cause.

const EXTENSIONS = [".ts", ".mts", ".js", ".mjs"];

export type DiscoveredFile = { id: string; file: string };

function skipped(name: string): boolean {
  return (
    name.startsWith(".") ||
    name.startsWith("_") ||
    name === "node_modules" ||
    /\.(test|spec)\.[cm]?[jt]s$/.test(name) ||
    name.endsWith(".d.ts")
  );
}

export function discoverFunctions(dir: string): DiscoveredFile[] {
  const root = resolve(dir);
  const out: DiscoveredFile[] = [];
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT" && d === root) return;
      throw err;
    }
    for (const name of names) {
      if (skipped(name) || name === "__tests__") continue;
      const full = join(d, name);
      const st = statSync(full);
      if (st.isDirectory()) walk(full);
      else if (st.isFile()) {
        const ext = EXTENSIONS.find((e) => name.endsWith(e));
        if (!ext) continue;
        const id = relative(root, full).slice(0, -ext.length).split(sep).join("/");
        out.push({ id, file: full });
      }
    }
  };
  walk(root);
  out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (let i = 1; i < out.length; i++) {
    if (out[i]!.id === out[i - 1]!.id) {
      throw new HostError(ErrorCode.FunctionLoad, `${out[i]!.file}: function id "${out[i]!.id}" is also defined by ${out[i - 1]!.file}`);
    }
  }
  return out;
}

/**
 * Imports one function file. `version` busts the module cache so `host dev` can load a changed
 * file again in the same process.
 */
export async function importFunction(file: string, version?: number): Promise<FunctionDefinition> {
  const url = pathToFileURL(file).href + (version ? `?v=${version}` : "");
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (err) {
    const cause = coerceError(err);
    throw new HostError(ErrorCode.FunctionLoad, `${file}: could not be imported: ${cause.message}`, { cause });
  }
  const def = mod.default;
  if (!isFunctionDefinition(def)) {
    const what = def === undefined ? "has no default export" : "does not export a defineFunction(...) value as its default export";
    throw new HostError(ErrorCode.FunctionLoad, `${file}: ${what}`);
  }
  return def;
}
