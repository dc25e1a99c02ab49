import { existsSync, readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
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

/** Where `host dev` (and so `npm start`) writes the URL of the nats-server it started. */
export const NATS_URL_FILE = ".data/nats.url";

export type NatsSource = "NATS_URL" | typeof NATS_URL_FILE | "default";
export type ResolvedNats = {
  /** One URL, or several separated by commas (NATS_URL may list a cluster). */
  url: string;
  source: NatsSource;
  /** Why a candidate was passed over (a stale .data/nats.url), for the line the CLIs print. */
  note?: string;
};

/**
 * The server a CLI talks to: NATS_URL when set; else the URL `npm start` wrote to .data/nats.url
 * (relative to `cwd`), if a NATS server answers there; else nats://127.0.0.1:4222. The file is
 * checked, not trusted: `host dev` deletes it when it stops, but a killed one leaves it behind,
 * naming a port nobody listens on (or, later, someone else).
 */
export async function resolveNats(opts: { env?: Readonly<Record<string, string | undefined>>; cwd?: string; probeMs?: number } = {}): Promise<ResolvedNats> {
  const given = loadSettings(opts.env).nats.url;
  if (given) return { url: given, source: "NATS_URL" };
  const file = resolve(opts.cwd ?? process.cwd(), NATS_URL_FILE);
  if (existsSync(file)) {
    const written = readFileSync(file, "utf8").trim();
    if (written && (await natsAnswers(written, opts.probeMs ?? 1000))) return { url: written, source: NATS_URL_FILE };
    return { url: DEFAULT_NATS_URL, source: "default", note: `${NATS_URL_FILE} names ${written || "nothing"}, where no NATS server answers` };
  }
  return { url: DEFAULT_NATS_URL, source: "default" };
}

/** `nats: nats://127.0.0.1:41234 (from .data/nats.url)` — the line every CLI prints to stderr. */
export function describeNats(n: ResolvedNats): string {
  const from = n.source === "default" ? `default${n.note ? `; ${n.note}` : ""}` : `from ${n.source}`;
  return `nats: ${n.url} (${from})`;
}

/** Splits a resolved URL list into the `servers` the client takes. */
export function serversOf(url: string): string[] {
  return url.split(",").map((s) => s.trim()).filter(Boolean);
}

/** True when something at `url` greets a new connection with a NATS `INFO` line within `timeoutMs`. */
export function natsAnswers(url: string, timeoutMs: number): Promise<boolean> {
  let host: string;
  let port: number;
  try {
    const u = new URL(url.includes("://") ? url : `nats://${url}`);
    host = u.hostname.replace(/^\[|\]$/g, "");
    port = Number(u.port || 4222);
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((done) => {
    const socket = tcpConnect({ host, port });
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      done(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    let greeting = "";
    socket.on("data", (chunk) => {
      greeting += chunk.toString("latin1");
      if (greeting.length >= 5) finish(greeting.startsWith("INFO "));
    });
    socket.on("error", () => finish(false));
    socket.on("close", () => finish(false));
  });
}
