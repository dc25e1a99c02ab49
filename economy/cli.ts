import { fileURLToPath } from "node:url";
import { headers as natsHeaders, type Authenticator } from "@nats-io/transport-node";
import { parseArgs } from "node:util";
import { migrate, openDatabase, type Database } from "./db.ts";
import { EconomyError, EconomyErrorCode, isEconomyError } from "./errors.ts";
import { checkLedger, type LedgerCheck } from "./ledger.ts";
import { formatCredits } from "./money.ts";

// `economy` — look after the economy's database. `npm run economy -- help`.

const USAGE = `Usage: economy <command> [options]

  ledger check [--json]   prove the ledger's invariants (exit 0 when they hold, 1 when not):
                          Σ agent balances = genesis + minted − burned, Σ all accounts = 0,
                          every transaction sums to zero, no agent below zero
  migrate                 apply the migrations in economy/migrations not yet applied
  reward grant --agent ID --amount CREDITS [--reason TEXT] [--prompt ID] [--response TEXT]
                          a human's reward: publishes admin.reward.grant (NATS_URL), which mints
  projections rebuild     rewrite the agent_state and market_prices KV buckets from the ledger

Environment: NATS_URL (unset: the server \`npm start\` wrote to .data/nats.url if it answers, else
nats://127.0.0.1:4222; reward and projections name it on stderr).
DATABASE_URL (postgres://…). Unset: the embedded PostgreSQL in .data/pg — the one
already running there (npm start), or one started for this command.
`;

function cliHeaders() {
  const h = natsHeaders();
  h.set("Syntropism-Sender", "cli");
  return h;
}

/** The server `npm start` runs (or NATS_URL's), named on stderr in one line. */
/** The server the CLI talks to, as the operator (its credentials included), said on stderr. */
async function announcedNats(): Promise<{ servers: string[]; authenticator?: Authenticator }> {
  const { describeNats, natsConnectOptions, resolveNats, serversOf } = await import("../host/configFile.ts");
  const nats = await resolveNats({ role: "admin" });
  console.error(describeNats(nats));
  return { servers: serversOf(nats.url), ...natsConnectOptions(nats) };
}

export const ExitCode = { Ok: 0, Failed: 1, Usage: 64 } as const;

export function formatCheck(c: LedgerCheck): string {
  const money = (micro: bigint) => `${formatCredits(micro)} credits (${micro} µ)`;
  const list = <T>(items: T[], show: (x: T) => string) => (items.length === 0 ? "none" : items.map(show).join(", "));
  const rows: [string, string][] = [
    ["agents", String(c.agents)],
    ["transactions", String(c.transactions)],
    ["Σ agent balances", money(c.totalAgents)],
    ["genesis", money(c.genesis)],
    ["minted", money(c.minted)],
    ["burned", money(c.burned)],
    ["genesis + minted − burned", money(c.expected)],
    ["Σ all accounts", money(c.totalAll)],
    ["negative balances", list(c.negative, (n) => `${n.accountId} ${n.balance}`)],
    ["unbalanced transactions", list(c.unbalancedTx, (u) => `#${u.txId} ${u.sourceMsgId} (sum ${u.sum}, ${u.entries} entries)`)],
    ["balance ≠ entries", list(c.drift, (d) => `${d.accountId} ${d.balance} ≠ ${d.entries}`)],
    ["reserved > balance", list(c.overReserved, (o) => `${o.agentId} ${o.reserved} > ${o.balance}`)],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [`ledger check: ${c.ok ? "ok" : "FAILED"}`, ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)].join("\n");
}

const toJson = (value: unknown) => JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2);

async function withDatabase<T>(migrate: boolean, fn: (db: Database) => Promise<T>): Promise<T> {
  const db = await openDatabase({ migrate, max: 2, log: (m) => console.error(m) });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        agent: { type: "string" },
        amount: { type: "string" },
        reason: { type: "string" },
        prompt: { type: "string" },
        response: { type: "string" },
      },
      allowPositionals: true,
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return ExitCode.Usage;
  }
  const [command, sub] = parsed.positionals;
  const json = parsed.values.json ?? false;
  if (parsed.values.help || command === "help" || command === undefined) {
    console.log(USAGE);
    return command === undefined && !parsed.values.help ? ExitCode.Usage : ExitCode.Ok;
  }
  try {
    if (command === "ledger" && sub === "check") {
      const check = await withDatabase(false, async ({ sql }) => {
        const [t] = await sql`SELECT to_regclass('ledger_transactions') AS t`;
        if (!t?.t) throw new EconomyError(EconomyErrorCode.NotMigrated, "the database has no ledger yet: run `npm run economy -- migrate`");
        return checkLedger(sql);
      });
      console.log(json ? toJson(check) : formatCheck(check));
      return check.ok ? ExitCode.Ok : ExitCode.Failed;
    }
    if (command === "reward" && sub === "grant") {
      const { agent, amount, reason, prompt, response } = parsed.values;
      const credits = Number(amount);
      if (!agent || !(credits > 0)) {
        console.error(`reward grant needs --agent ID and --amount CREDITS (> 0)\n\n${USAGE}`);
        return ExitCode.Usage;
      }
      const { connect } = await import("@nats-io/transport-node");
      const { jetstream } = await import("@nats-io/jetstream");
      const nc = await connect({ ...(await announcedNats()), name: "syntropism-economy-cli" });
      try {
        const body = { agent_id: agent, amount: credits, reason: reason ?? "", ...(prompt ? { prompt_id: prompt } : {}), ...(response ? { response } : {}) };
        const ack = await jetstream(nc).publish("admin.reward.grant", JSON.stringify(body), { headers: cliHeaders() });
        console.log(`reward of ${credits} credits to ${agent} queued (ECONOMY sequence ${ack.seq}); watch economic.reward_granted`);
      } finally {
        await nc.close();
      }
      return ExitCode.Ok;
    }
    if (command === "projections" && sub === "rebuild") {
      const { connect } = await import("@nats-io/transport-node");
      const { Kvm } = await import("@nats-io/kv");
      const { rebuildProjections, AGENT_STATE, MARKET_PRICES } = await import("./projections.ts");
      const nc = await connect({ ...(await announcedNats()), name: "syntropism-economy-cli" });
      try {
        const kvm = new Kvm(nc);
        const n = await withDatabase(false, async ({ sql }) => rebuildProjections(await kvm.open(AGENT_STATE), await kvm.open(MARKET_PRICES), sql as never));
        console.log(`rebuilt ${n.agents} agent(s) and ${n.prices} price(s)`);
      } finally {
        await nc.close();
      }
      return ExitCode.Ok;
    }
    if (command === "migrate" && sub === undefined) {
      const result = await withDatabase(false, ({ sql }) => migrate(sql));
      if (json) console.log(toJson(result));
      else console.log(result.applied.length ? `applied ${result.applied.join(", ")}` : `up to date (${result.current.length} migrations)`);
      return ExitCode.Ok;
    }
  } catch (err) {
    const e = err as Error & { code?: string };
    console.error(`economy ${[command, sub].filter(Boolean).join(" ")}: ${isEconomyError(e) || e.code ? `${e.code}: ` : ""}${e.message}`);
    return ExitCode.Failed;
  }
  console.error(`unknown command: ${[command, sub].filter(Boolean).join(" ")}\n\n${USAGE}`);
  return ExitCode.Usage;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  run(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
