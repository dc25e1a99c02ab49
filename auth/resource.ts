import { defineResource, NonRetriableError, type Logger } from "syntropism";
import { settingsOf } from "../config/settings.ts";
import { AUTH_DIR, Authority, type AgentCredentials } from "./authority.ts";

// Agents' NATS credentials as a host resource: issued for an execution (until the end of the window
// it paid for plus a grace) and revoked when an agent is terminated. The keys are read from
// NATS_AUTH_DIR (default .data/auth, where `host dev` keeps them). A host whose server runs without
// authentication has nothing to issue or revoke; one whose server has authentication but that holds
// no keys says so on each use (the message names the folder), without stopping the other functions.

/** How long an agent's credentials outlive the window it paid for: time to report and disconnect. */
export const CREDENTIALS_GRACE_MS = 30_000;

/** When credentials for window `windowId` (`floor(t / windowMs)`, economy/runtime.ts) expire. */
export function windowCredentialsExpiry(windowId: number, windowMs: number, graceMs = CREDENTIALS_GRACE_MS): Date {
  return new Date((windowId + 1) * windowMs + graceMs);
}

export class Credentials {
  readonly #authority: Authority | undefined;
  readonly #why: string;
  readonly #servers: () => string;
  readonly #windowMs: number;
  readonly authRequired: boolean;

  constructor(opts: { authority?: Authority; why?: string; authRequired: boolean; servers: () => string; windowMs: number }) {
    this.#authority = opts.authority;
    this.#why = opts.why ?? "";
    this.authRequired = opts.authRequired;
    this.#servers = opts.servers;
    this.#windowMs = opts.windowMs;
  }

  #need(): Authority {
    if (!this.#authority) throw new NonRetriableError(`agents' credentials are unavailable: ${this.#why}`, { code: "AUTH_ERR_MISSING_KEY" });
    return this.#authority;
  }

  /** Credentials for one execution of `agentId`, valid until `expiresAt`. */
  issue(agentId: string, expiresAt: Date): Promise<AgentCredentials> {
    return this.#need().agentCredentials(agentId, expiresAt);
  }

  /** Credentials for the execution `agentId` paid for in window `windowId`: until its end plus the grace. */
  issueForWindow(agentId: string, windowId: number): Promise<AgentCredentials> {
    return this.issue(agentId, windowCredentialsExpiry(windowId, this.#windowMs));
  }

  /** Revokes every credential of these agents on the host's server; the ones not revoked before. */
  async revoke(agentIds: readonly string[]): Promise<string[]> {
    if (!this.authRequired) return [];
    return this.#need().revokeAgents(this.#servers(), agentIds);
  }
}

export const credentials = defineResource({
  name: "credentials",
  async setup(ctx): Promise<Credentials> {
    const settings = settingsOf(ctx.settings);
    const authRequired = ctx.nc.info?.auth_required === true;
    // revocations go to the server this host is connected to now
    const base = { authRequired, servers: () => `nats://${ctx.nc.getServer()}`, windowMs: settings.economy.windowMs };
    if (!authRequired) return new Credentials(base);
    const dir = settings.nats.authDir ?? AUTH_DIR;
    try {
      return new Credentials({ ...base, authority: await Authority.open(dir) });
    } catch (err) {
      warn(ctx.log, dir, err);
      return new Credentials({ ...base, why: (err as Error).message });
    }
  },
});

function warn(log: Logger, dir: string, err: unknown): void {
  log.warn({ dir, err: (err as Error).message }, "the NATS server requires authentication but this host holds no keys to issue or revoke agents' credentials");
}
