import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";
import { decode, encodeAccount, encodeOperator, encodeUser, fmtCreds, type Account, type ClaimsData } from "@nats-io/jwt";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { natsConnectOptions } from "../host/configFile.ts";
import { CodedError } from "../host/errors.ts";
import { agentExports, agentPermissions, AGENT_LIMITS, agentInboxPrefix, ROLES, type Role } from "./permissions.ts";
import { agentUserSeed, fastKeyPair, seedKind } from "./keys.ts";

// The project's NATS identities, decentralized JWT auth (nats-server ≥ 2.2; checked on 2.9.10):
// an operator, the system account, the application account (JetStream; its users are the host
// workers, the operators and the scenario runner) and the agents' account (no JetStream; one user
// per agent), which imports from the application account exactly the subjects agents may use
// (auth/permissions.ts, agentExports). Account and user JWTs are signed here, in
// TypeScript, so a new agent's credentials need no server reload. Why this scheme, and what an
// operator configures on their own server: docs/security.md.
//
// Layout of the folder (`.data/auth` under `npm start` and `host dev`; mode 0700, files 0600):
//   auth.json              what was created, and when (a stale or partial folder is refused)
//   operator.nk, system-account.nk, account.nk, agents-account.nk, agent-signer.nk   seeds
//   operator.jwt, system-account.jwt, account.jwt, agents-account.jwt  the JWTs the server trusts
//   service.creds, admin.creds, scenario.creds, system.creds       one credential per component
//   server.conf            included by the local nats-server (operator, resolver, preload)
//   resolver/              the server's account store (takes revocations pushed at run time)

export const AUTH_DIR = ".data/auth";
const VERSION = 1;
/** The time (Unix seconds, 9999-12-31) a terminated agent's user key is revoked up to. */
export const REVOKED_FOR_GOOD = 253_402_300_799;
const ACCOUNT_NAME = "SYNTROPISM";
const AGENTS_ACCOUNT_NAME = "AGENTS";

export const AuthErrorCode = {
  /** A file of the auth folder is missing: the folder is partial. */
  MissingKey: "AUTH_ERR_MISSING_KEY",
  /** The folder's files disagree with each other (keys regenerated in part, another version). */
  Stale: "AUTH_ERR_STALE",
  /** A credentials file that is unreadable, malformed, or refused by the server. */
  BadCredentials: "AUTH_ERR_BAD_CREDENTIALS",
  /** A revocation the server did not take. */
  Revoke: "AUTH_ERR_REVOKE",
} as const;
export type AuthErrorCode = (typeof AuthErrorCode)[keyof typeof AuthErrorCode];

export class AuthError extends CodedError<AuthErrorCode> {
  override name = "AuthError";
}

type Manifest = { version: number; created_at: string; operator: string; system_account: string; account: string; agents_account: string; agent_signer: string };

// Limits must be explicit: an account JWT without them allows no connection at all. The system
// account may not have JetStream.
const NATS_LIMITS = { conn: -1, subs: -1, data: -1, payload: -1, leaf: -1, imports: -1, exports: -1, wildcards: true };
const SYSTEM_LIMITS = { limits: NATS_LIMITS } as Partial<Account>;
const AGENTS_LIMITS = { limits: NATS_LIMITS } as Partial<Account>;
const ACCOUNT_LIMITS = { limits: { ...NATS_LIMITS, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } } as Partial<Account>;
const UNLIMITED_USER = { subs: -1, data: -1, payload: -1 };

const dec = new TextDecoder();
const seedOf = (kp: KeyPair) => dec.decode(kp.getSeed());

function writeSecret(file: string, content: string | Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

export type AgentCredentials = {
  agentId: string;
  /** The `.creds` file's text (JWT and seed): a secret. */
  creds: string;
  jwt: string;
  publicKey: string;
  expiresAt: Date;
  inboxPrefix: string;
};

/** The operator, the accounts and the signing keys of one deployment, loaded from a folder. */
export class Authority {
  readonly dir: string;
  readonly manifest: Manifest;
  readonly #operator: KeyPair;
  readonly #agentSigner: KeyPair;
  readonly #agentSignerSeed: string;

  private constructor(dir: string, manifest: Manifest, operator: KeyPair, agentSignerSeed: string) {
    this.dir = dir;
    this.manifest = manifest;
    this.#operator = operator;
    this.#agentSignerSeed = agentSignerSeed;
    this.#agentSigner = fastKeyPair(agentSignerSeed);
  }

  get accountPublicKey(): string {
    return this.manifest.account;
  }
  get systemAccountPublicKey(): string {
    return this.manifest.system_account;
  }
  get agentsAccountPublicKey(): string {
    return this.manifest.agents_account;
  }

  /** The credentials file of a component. */
  credsFile(role: Role | "system"): string {
    return join(this.dir, `${role}.creds`);
  }

  /** Configuration text for nats-server (`include` it, or pass it with `-c`). */
  serverConfigFile(): string {
    return join(this.dir, "server.conf");
  }

  /**
   * Loads the folder, or creates it when it does not exist and `create` is set. A folder that is
   * partial or whose files disagree is refused with a message saying what to do: keys are never
   * regenerated silently, since that invalidates every credential issued so far.
   */
  static async open(dir: string, opts: { create?: boolean } = {}): Promise<Authority> {
    dir = resolve(dir);
    const manifestFile = join(dir, "auth.json");
    if (!existsSync(manifestFile)) {
      if (existsSync(dir) && existsSync(join(dir, "account.nk"))) {
        throw new AuthError(AuthErrorCode.Stale, `${manifestFile} is missing but ${dir} holds keys: the folder is from another version or was edited. Delete ${dir} to create new keys (credentials issued so far stop working).`);
      }
      if (!opts.create) throw new AuthError(AuthErrorCode.MissingKey, `${dir} has no NATS identities: run \`npm start\` or \`npm run host -- dev\` once to create them, or \`npm run host -- auth init\``);
      return Authority.#create(dir);
    }
    return Authority.#load(dir);
  }

  static async #create(dir: string): Promise<Authority> {
    mkdirSync(join(dir, "resolver"), { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const operator = createOperator();
    const system = createAccount();
    const account = createAccount();
    const agents = createAccount();
    const agentSigner = createAccount();
    const operatorKp = fastKeyPair(seedOf(operator));
    const manifest: Manifest = {
      version: VERSION,
      created_at: new Date().toISOString(),
      operator: operator.getPublicKey(),
      system_account: system.getPublicKey(),
      account: account.getPublicKey(),
      agents_account: agents.getPublicKey(),
      agent_signer: agentSigner.getPublicKey(),
    };
    writeSecret(join(dir, "operator.nk"), seedOf(operator));
    writeSecret(join(dir, "system-account.nk"), seedOf(system));
    writeSecret(join(dir, "account.nk"), seedOf(account));
    writeSecret(join(dir, "agents-account.nk"), seedOf(agents));
    writeSecret(join(dir, "agent-signer.nk"), seedOf(agentSigner));
    writeSecret(join(dir, "operator.jwt"), await encodeOperator("syntropism", operatorKp, { system_account: manifest.system_account }));
    writeSecret(join(dir, "system-account.jwt"), await encodeAccount("SYS", system, SYSTEM_LIMITS, { signer: operatorKp }));
    const { services, streams } = agentExports();
    const exports = [...services.map((subject) => ({ name: subject, subject, type: "service" as const })), ...streams.map((subject) => ({ name: subject, subject, type: "stream" as const }))];
    writeSecret(join(dir, "account.jwt"), await encodeAccount(ACCOUNT_NAME, account, { ...ACCOUNT_LIMITS, exports }, { signer: operatorKp }));
    const imports = exports.map((e) => ({ ...e, account: manifest.account }));
    writeSecret(join(dir, "agents-account.jwt"), await encodeAccount(AGENTS_ACCOUNT_NAME, agents, { ...AGENTS_LIMITS, imports, signing_keys: [manifest.agent_signer] }, { signer: operatorKp }));
    const accountKp = fastKeyPair(seedOf(account));
    for (const role of Object.keys(ROLES) as Role[]) {
      const user = createUser();
      const jwt = await encodeUser(role, user, accountKp, { ...UNLIMITED_USER, ...ROLES[role].permissions });
      writeSecret(join(dir, `${role}.creds`), fmtCreds(jwt, user));
    }
    const sysUser = createUser();
    writeSecret(join(dir, "system.creds"), fmtCreds(await encodeUser("system", sysUser, fastKeyPair(seedOf(system)), UNLIMITED_USER), sysUser));
    writeSecret(join(dir, "auth.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    const authority = await Authority.#load(dir);
    authority.#writeServerConfig();
    return authority;
  }

  static async #load(dir: string): Promise<Authority> {
    const read = (name: string) => {
      const file = join(dir, name);
      if (!existsSync(file)) throw new AuthError(AuthErrorCode.MissingKey, `${file} is missing: ${dir} is partial. Restore the file, or delete ${dir} to create new keys (credentials issued so far stop working).`);
      return readFileSync(file, "utf8").trim();
    };
    let manifest: Manifest;
    try {
      manifest = JSON.parse(read("auth.json")) as Manifest;
    } catch (err) {
      if (err instanceof AuthError) throw err;
      throw new AuthError(AuthErrorCode.Stale, `${join(dir, "auth.json")} is not JSON (${(err as Error).message}); delete ${dir} to create new keys`);
    }
    if (manifest.version !== VERSION) throw new AuthError(AuthErrorCode.Stale, `${dir} holds auth version ${manifest.version}, this release reads ${VERSION}; delete ${dir} to create new keys`);
    const stale = (what: string) => new AuthError(AuthErrorCode.Stale, `${join(dir, what)} does not belong with ${join(dir, "auth.json")} (keys from another set): delete ${dir} to create new keys (credentials issued so far stop working)`);
    const seeds: [string, string, string][] = [
      ["operator.nk", "O", manifest.operator],
      ["system-account.nk", "A", manifest.system_account],
      ["account.nk", "A", manifest.account],
      ["agents-account.nk", "A", manifest.agents_account],
      ["agent-signer.nk", "A", manifest.agent_signer],
    ];
    const loaded: Record<string, string> = {};
    for (const [file, kind, pub] of seeds) {
      const seed = read(file);
      if (seedKind(seed) !== kind) throw new AuthError(AuthErrorCode.BadCredentials, `${join(dir, file)} is not a valid ${kind === "O" ? "operator" : "account"} seed`);
      if (fastKeyPair(seed).getPublicKey() !== pub) throw stale(file);
      loaded[file] = seed;
    }
    const claims = (file: string) => {
      try {
        return decode<unknown>(read(file));
      } catch (err) {
        if (err instanceof AuthError) throw err;
        throw new AuthError(AuthErrorCode.BadCredentials, `${join(dir, file)} is not a JWT (${(err as Error).message})`);
      }
    };
    if (claims("operator.jwt").sub !== manifest.operator) throw stale("operator.jwt");
    for (const [file, pub] of [["system-account.jwt", manifest.system_account], ["account.jwt", manifest.account], ["agents-account.jwt", manifest.agents_account]] as const) {
      const c = claims(file);
      if (c.sub !== pub || c.iss !== manifest.operator) throw stale(file);
    }
    for (const role of [...Object.keys(ROLES), "system"]) read(`${role}.creds`);
    if (statSync(dir).mode & 0o077) chmodSync(dir, 0o700);
    return new Authority(dir, manifest, fastKeyPair(loaded["operator.nk"]!), loaded["agent-signer.nk"]!);
  }

  #writeServerConfig(): void {
    const jwt = (f: string) => readFileSync(join(this.dir, f), "utf8").trim();
    const text = [
      "# Written by syntropism (auth/authority.ts): decentralized JWT authentication.",
      `operator: ${jwt("operator.jwt")}`,
      `system_account: ${this.manifest.system_account}`,
      `resolver: { type: full, dir: ${JSON.stringify(join(this.dir, "resolver"))}, allow_delete: false, interval: "2m", timeout: "2s" }`,
      // the time a client has to answer the server's nonce: agents sign it in a sandbox with half a
      // core, and fifty starting at once took longer than the default 2 s (seen in bench agents)
      "authorization { timeout: 10 }",
      "resolver_preload: {",
      `  ${this.manifest.system_account}: ${jwt("system-account.jwt")}`,
      `  ${this.manifest.account}: ${jwt("account.jwt")}`,
      `  ${this.manifest.agents_account}: ${jwt("agents-account.jwt")}`,
      "}",
      "",
    ].join("\n");
    writeSecret(this.serverConfigFile(), text);
  }

  /**
   * Credentials for one execution of an agent, valid until `expiresAt` (the end of the window it
   * paid for plus a grace): the server refuses them after that and closes a connection using them.
   */
  async agentCredentials(agentId: string, expiresAt: Date): Promise<AgentCredentials> {
    const user = fastKeyPair(agentUserSeed(this.#agentSignerSeed, agentId));
    const exp = Math.floor(expiresAt.getTime() / 1000);
    const jwt = await encodeUser(`agent:${agentId}`, user, this.manifest.agents_account, { ...agentPermissions(agentId), ...AGENT_LIMITS }, { signer: this.#agentSigner, exp });
    return { agentId, creds: dec.decode(fmtCreds(jwt, user)), jwt, publicKey: user.getPublicKey(), expiresAt: new Date(exp * 1000), inboxPrefix: agentInboxPrefix(agentId) };
  }

  /** The user public key every credential of `agentId` carries (what a revocation names). */
  agentPublicKey(agentId: string): string {
    return fastKeyPair(agentUserSeed(this.#agentSignerSeed, agentId)).getPublicKey();
  }

  /**
   * Revokes every credential of these agents, for good: the account JWT gains a revocation entry
   * per agent and is pushed to the server as the system account, which closes their open
   * connections and refuses them from then on. NATS revokes the JWTs of a user key issued up to the
   * entry's time; the entry is dated REVOKED_FOR_GOOD, so credentials issued later (by a process
   * that did not know) are refused too — termination is final, and an agent id is never reused. The account JWT on the server is the one read and
   * extended, so revocations made elsewhere are kept; callers serialize (see
   * functions/system/revokeCredentials.ts). Returns the agents that were not revoked already.
   */
  async revokeAgents(servers: string | string[], agentIds: readonly string[]): Promise<string[]> {
    const nc = await connect({ servers, name: "syntropism-revoker", ...natsConnectOptions({ creds: this.credsFile("system") }) });
    try {
      const prefix = `$SYS.REQ.ACCOUNT.${this.manifest.agents_account}`;
      const current = await this.#currentAccount(nc, prefix);
      const revocations = { ...(current.nats.revocations ?? {}) } as Record<string, number>;
      const added: string[] = [];
      for (const id of agentIds) {
        const pub = this.agentPublicKey(id);
        if ((revocations[pub] ?? 0) >= REVOKED_FOR_GOOD) continue;
        revocations[pub] = REVOKED_FOR_GOOD;
        added.push(id);
      }
      if (!added.length) return [];
      const { sub: _s, ...rest } = current.nats as Account & { sub?: string };
      const jwt = await encodeAccount(current.name, this.manifest.agents_account, { ...rest, revocations }, { signer: this.#operator });
      const reply = (await nc.request(`${prefix}.CLAIMS.UPDATE`, jwt, { timeout: 5000 })).json<{ data?: { code?: number; message?: string }; error?: { code?: number; description?: string } }>();
      if (reply.error || reply.data?.code !== 200) throw new AuthError(AuthErrorCode.Revoke, `the server did not take the revocation of ${added.join(", ")}: ${JSON.stringify(reply)}`);
      writeSecret(join(this.dir, "agents-account.jwt"), jwt);
      this.#writeServerConfig();
      return added;
    } finally {
      await nc.close();
    }
  }

  /** The account JWT the server holds now (it may carry revocations made by another process). */
  async #currentAccount(nc: NatsConnection, prefix: string): Promise<ClaimsData<Account>> {
    const m = await nc.request(`${prefix}.CLAIMS.LOOKUP`, undefined, { timeout: 5000 });
    const text = m.string().trim();
    if (!text.startsWith("ey")) throw new AuthError(AuthErrorCode.Revoke, `the server did not return account ${this.manifest.agents_account}'s JWT: ${text.slice(0, 200)}`);
    return decode<Account>(text);
  }
}
