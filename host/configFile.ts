import { existsSync, readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { relative, resolve } from "node:path";
import { credsAuthenticator, type Authenticator } from "@nats-io/transport-node";
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
  /** The credentials file to connect with: NATS_CREDS, or the component's own under `.data/auth` for the local server. */
  creds?: string;
};

/** Where `host dev` keeps the local server's identities (auth/authority.ts writes it). */
export const AUTH_DIR = ".data/auth";

/** A component's identity: `service` for host workers, `admin` for the operator CLIs, `scenario` for the runner. */
export type NatsRole = "service" | "admin" | "scenario";

/**
 * The credentials a component connects with: NATS_CREDS when set (any server); else, for the local
 * server `npm start` runs (found through .data/nats.url), the component's file in .data/auth.
 */
function credsFor(source: NatsSource, role: NatsRole, cwd: string, given: string | undefined): string | undefined {
  if (given) return resolve(cwd, given);
  if (source !== NATS_URL_FILE) return undefined;
  const file = resolve(cwd, AUTH_DIR, `${role}.creds`);
  return existsSync(file) ? file : undefined;
}

/** Connection options for a resolved server: its credentials, read now (a clear error when they cannot be). */
export function natsConnectOptions(nats: Pick<ResolvedNats, "creds">): { authenticator?: Authenticator } {
  if (!nats.creds) return {};
  let text: string;
  try {
    text = readFileSync(nats.creds, "utf8");
  } catch (err) {
    throw new HostError(ErrorCode.NatsCredentials, `cannot read the NATS credentials file ${nats.creds}: ${(err as Error).message}`, { cause: err });
  }
  if (!/-----BEGIN NATS USER JWT-----[\s\S]+-----BEGIN USER NKEY SEED-----/.test(text)) {
    throw new HostError(ErrorCode.NatsCredentials, `${nats.creds} is not a NATS credentials file (it needs a "BEGIN NATS USER JWT" and a "BEGIN USER NKEY SEED" block)`);
  }
  return { authenticator: credsAuthenticator(new TextEncoder().encode(text)) };
}

/** The message for a connection the server refused: says which credentials were used and what to do. */
export function explainConnectError(nats: ResolvedNats, err: unknown): string {
  const msg = (err as Error)?.message ?? String(err);
  if (/Authorization Violation|Authentication Expired|authorization/i.test(msg)) {
    return nats.creds
      ? `NATS at ${nats.url} refused the credentials in ${nats.creds} (${msg}): they belong to another server or were revoked or expired; set NATS_CREDS to this server's, or restart \`npm start\``
      : `NATS at ${nats.url} requires authentication (${msg}): set NATS_CREDS to a credentials file (with \`npm start\` running, the CLIs use .data/auth/admin.creds by themselves)`;
  }
  return `cannot connect to NATS at ${nats.url} (${msg}); set NATS_URL or run \`npm start\``;
}

/**
 * The server a CLI talks to: NATS_URL when set; else the URL `npm start` wrote to .data/nats.url
 * (relative to `cwd`), if a NATS server answers there; else nats://127.0.0.1:4222. The file is
 * checked, not trusted: `host dev` deletes it when it stops, but a killed one leaves it behind,
 * naming a port nobody listens on (or, later, someone else).
 */
export async function resolveNats(opts: { env?: Readonly<Record<string, string | undefined>>; cwd?: string; probeMs?: number; role?: NatsRole } = {}): Promise<ResolvedNats> {
  const settings = loadSettings(opts.env).nats;
  const cwd = opts.cwd ?? process.cwd();
  const withCreds = (n: ResolvedNats): ResolvedNats => {
    const creds = credsFor(n.source, opts.role ?? "admin", cwd, settings.creds);
    return creds ? { ...n, creds } : n;
  };
  if (settings.url) return withCreds({ url: settings.url, source: "NATS_URL" });
  const file = resolve(cwd, NATS_URL_FILE);
  if (existsSync(file)) {
    const written = readFileSync(file, "utf8").trim();
    if (written && (await natsAnswers(written, opts.probeMs ?? 1000))) return withCreds({ url: written, source: NATS_URL_FILE });
    return withCreds({ url: DEFAULT_NATS_URL, source: "default", note: `${NATS_URL_FILE} names ${written || "nothing"}, where no NATS server answers` });
  }
  return withCreds({ url: DEFAULT_NATS_URL, source: "default" });
}

/** `nats: nats://127.0.0.1:41234 (from .data/nats.url)` — the line every CLI prints to stderr. */
export function describeNats(n: ResolvedNats): string {
  const from = n.source === "default" ? `default${n.note ? `; ${n.note}` : ""}` : `from ${n.source}`;
  return `nats: ${n.url} (${from})${n.creds ? `, credentials ${relativeToCwd(n.creds)}` : ""}`;
}

function relativeToCwd(file: string): string {
  const r = relative(process.cwd(), file);
  return r.startsWith("..") ? file : r;
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
