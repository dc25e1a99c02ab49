import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseConfig, type HostConfig } from "./config.ts";
import { ErrorCode, HostError } from "./errors.ts";
import { loadSettings } from "../config/settings.ts";

/** Imports `streams.config.ts` (default export) and validates it. */
export async function loadConfigFile(path = "streams.config.ts"): Promise<HostConfig> {
  const file = resolve(path);
  if (!existsSync(file)) throw new HostError(ErrorCode.Config, `${file} does not exist; pass --config or run from the project folder`);
  let mod: { default?: unknown };
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    throw new HostError(ErrorCode.Config, `${file} could not be imported: ${(err as Error).message}`, { cause: err });
  }
  if (mod.default === undefined) throw new HostError(ErrorCode.Config, `${file} has no default export (export default defineConfig({...}))`);
  return parseConfig(mod.default, file);
}

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/** NATS_URL (config/settings.ts), which may list several servers separated by commas. */
export function natsUrl(): string {
  return loadSettings().nats.url || DEFAULT_NATS_URL;
}

export function natsServers(): string[] {
  return natsUrl().split(",").map((s) => s.trim()).filter(Boolean);
}
