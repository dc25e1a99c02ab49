import { setTimeout as sleep } from "node:timers/promises";
import type postgres from "postgres";
import type { Db } from "./db.ts";
import {
  EconomyError,
  EconomyErrorCode,
  IdempotencyConflictError,
  InsufficientFundsError,
  InvalidArgumentError,
  isEconomyError,
  isSerializationError,
  refuse,
  UnknownAgentError,
} from "./errors.ts";
import { asAmount } from "./money.ts";

// The double-entry ledger. Every operation moves `amount` micro-credits from one account to another
// as one ledger transaction with two entries, keyed by the source message id of the command that
// caused it:
//
// - idempotent: a second call with the same sourceMsgId moves nothing and returns the first call's
//   receipt with `duplicate: true` (a different operation under a used id is IDEMPOTENCY_CONFLICT);
// - concurrent-safe: the accounts are locked (FOR UPDATE) in one fixed order before anything is
//   read, so two operations on the same accounts run one after the other and never deadlock each
//   other; the duplicate check and the funds check happen under those locks;
// - composable: pass a transaction (`sql.begin(tx => …)`) to make the movement part of it (record
//   a bid and move credits atomically); pass the pool and it runs in its own transaction, retried on
//   serialization failures and deadlocks.
//
// Refusals are thrown before anything is written, so a caller's transaction stays usable after
// catching one.

export const MINT_ACCOUNT = "system:mint";
export const BURN_ACCOUNT = "system:burn";
export const agentAccount = (agentId: string): string => `agent:${agentId}`;

export type LedgerKind = "genesis" | "reward" | "transfer" | "spawn" | "payment" | "refund" | "burn";
export type MintKind = "genesis" | "reward";
export type TransferKind = "transfer" | "spawn" | "payment" | "refund";

type Common = {
  /** The command's message id (its Nats-Msg-Id); one ledger transaction per id, ever. */
  sourceMsgId: string;
  /** Micro-credits, positive. */
  amount: bigint | number;
  correlationId?: string;
  causationId?: string;
  memo?: Record<string, unknown>;
};
export type MintInput = Common & { to: string; kind: MintKind };
export type TransferInput = Common & { from: string; to: string; kind?: TransferKind };
export type BurnInput = Common & { from: string };

export type Receipt = {
  txId: bigint;
  sourceMsgId: string;
  kind: LedgerKind;
  /** Account ids: `agent:<id>`, `system:mint`, `system:burn`. */
  fromAccount: string;
  toAccount: string;
  amount: bigint;
  createdAt: Date;
  /** True when this call found the transaction already recorded and moved nothing. */
  duplicate: boolean;
};

export type Balance = { balance: bigint; reserved: bigint; available: bigint };

const AGENT_ID = /^[A-Za-z0-9_-]{1,64}$/;

function checkAgentId(agentId: unknown, what = "agent id"): string {
  if (typeof agentId !== "string" || !AGENT_ID.test(agentId)) {
    throw new InvalidArgumentError(`${what} must match ${AGENT_ID.source}, got ${JSON.stringify(agentId)}`);
  }
  return agentId;
}

// a transaction has savepoint() (and, since postgres 4, begin() too); only a pool lacks it
const isPool = (db: Db): db is postgres.Sql<any> => typeof (db as { savepoint?: unknown }).savepoint !== "function";

export type TransactionOptions = {
  /** Runs of the transaction in all (default 5). */
  attempts?: number;
  /** Called before each rerun, with the error that ended the previous run (logs, tests). */
  onRetry?: (err: unknown, attempt: number) => void;
};

/**
 * Runs `fn` in a transaction: its own when `db` is the pool, or the caller's when `db` is one.
 *
 * Its own transaction is run again, up to `attempts` runs in all, when it ends in a serialization
 * failure (40001) or a deadlock (40P01), after a random pause that doubles with each run (≤ 20,
 * 40, 80, 160 ms): a conflict costs milliseconds here, not a redelivery with the host's backoff.
 * `fn` must therefore be safe to run again — it is, as a failed run rolled back everything it did;
 * results it hands out of the transaction should be set only by the run that commits. In the
 * caller's transaction nothing is retried here: the caller's retry covers it.
 */
export async function inTransaction<T>(db: Db, fn: (tx: postgres.TransactionSql<any>) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  if (!isPool(db)) return fn(db);
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return (await db.begin((tx) => fn(tx))) as T;
    } catch (err) {
      if (attempt >= attempts || !isSerializationError(err)) throw err;
      options.onRetry?.(err, attempt);
      await sleep(Math.random() * 10 * 2 ** attempt);
    }
  }
}

/**
 * Locks the given accounts FOR UPDATE in one fixed order (byte order of the id: `agent:…` before
 * `system:burn` before `system:mint`) and returns their balances. Anything that changes what an
 * agent may spend — a ledger movement, opening or settling a bid — takes this lock on the agent's
 * account first.
 *
 * The economy's lock order, which every transaction follows so that none can wait in a cycle
 * (docs/economy.md, "Lock order"):
 *
 *   1. the clearing lock (an advisory lock: exclusive for a clearing, so one runs at a time; shared
 *      for a group of bids, which therefore never runs beside a clearing);
 *   2. accounts, all that the transaction will touch, in one statement through this function —
 *      a later call for a subset of them (a movement inside a clearing) finds them held;
 *   3. bids, FOR UPDATE only of the agents whose accounts are held;
 *   4. market_state, by resource;
 *   5. rows only this transaction's command owns (prompts, outbox, market_windows …).
 *
 * A transaction that needs another account after step 2 would break the order: lock every
 * account up front instead. Genesis and spawn first lock the row of the agent they create (an id
 * nobody else holds an account of yet), then its account with the parent's in step 2.
 */
export async function lockAccounts(tx: Db, accountIds: string[]): Promise<Map<string, bigint>> {
  const ids = [...new Set(accountIds)];
  const rows = await tx<{ id: string; balance: bigint | string }[]>`
    SELECT id, balance FROM accounts WHERE id = ANY(${ids}::text[]) ORDER BY id COLLATE "C" FOR UPDATE`;
  return new Map(rows.map((r) => [r.id, BigInt(r.balance)]));
}

/** The agents among `agentIds` that an operator terminated (admin.agent.terminate). */
export async function terminatedAgents(db: Db, agentIds: string[]): Promise<Set<string>> {
  if (!agentIds.length) return new Set();
  const rows = await db<{ id: string }[]>`SELECT id FROM agents WHERE id = ANY(${[...new Set(agentIds)]}::text[]) AND status = 'terminated'`;
  return new Set(rows.map((r) => r.id));
}

/**
 * Refuses with AGENT_TERMINATED when one of the agents is terminated. Race-free when the caller
 * holds the agents' account locks: a termination takes the account lock before it changes the status.
 */
export async function refuseTerminated(db: Db, agentIds: string[], what = "it takes no commands"): Promise<void> {
  const gone = await terminatedAgents(db, agentIds);
  const first = agentIds.find((a) => gone.has(a));
  if (first !== undefined) throw refuse(EconomyErrorCode.AgentTerminated, `agent ${first} is terminated: ${what}`);
}

/** Micro-credits the agent's open bids hold until their window clears. */
export async function reserved(db: Db, agentId: string): Promise<bigint> {
  const [row] = await db<{ reserved: bigint | string }[]>`
    SELECT coalesce(sum(amount), 0)::bigint AS reserved FROM bids WHERE agent_id = ${agentId} AND status = 'open'`;
  return BigInt(row!.reserved);
}

/** The agent's balance, what open bids reserve of it, and what is left to spend — one snapshot. */
export async function balance(db: Db, agentId: string): Promise<Balance> {
  checkAgentId(agentId);
  const [row] = await db<{ balance: bigint | string; reserved: bigint | string }[]>`
    SELECT a.balance,
           (SELECT coalesce(sum(b.amount), 0) FROM bids b WHERE b.agent_id = ${agentId} AND b.status = 'open')::bigint AS reserved
      FROM accounts a WHERE a.id = ${agentAccount(agentId)}`;
  if (!row) throw new UnknownAgentError(agentId);
  const b = BigInt(row.balance);
  const r = BigInt(row.reserved);
  return { balance: b, reserved: r, available: b - r };
}

/** `balance` for a reader: an id no agent could have (malformed) is an unknown agent too. */
export async function agentBalance(db: Db, agentId: string): Promise<Balance> {
  try {
    return await balance(db, agentId);
  } catch (err) {
    if (isEconomyError(err) && err.code === EconomyErrorCode.InvalidArgument) throw new UnknownAgentError(agentId);
    throw err;
  }
}

export type OpenAccountOptions = { parentId?: string; sourceMsgId?: string };

/**
 * Creates the agent (when new) and its account with a zero balance. Idempotent: opening an existing
 * account returns it with `created: false`. A `parentId` must be a known agent.
 */
export async function openAccount(db: Db, agentId: string, options: OpenAccountOptions = {}): Promise<{ accountId: string; created: boolean }> {
  checkAgentId(agentId);
  if (options.parentId !== undefined) checkAgentId(options.parentId, "parent id");
  return inTransaction(db, async (tx) => {
    if (options.parentId !== undefined) {
      const [parent] = await tx`SELECT 1 FROM agents WHERE id = ${options.parentId}`;
      if (!parent) throw new UnknownAgentError(options.parentId);
    }
    await tx`INSERT INTO agents (id, parent_id, source_msg_id)
             VALUES (${agentId}, ${options.parentId ?? null}, ${options.sourceMsgId ?? null})
             ON CONFLICT DO NOTHING`;
    const inserted = await tx`INSERT INTO accounts (id, kind, agent_id) VALUES (${agentAccount(agentId)}, 'agent', ${agentId})
                              ON CONFLICT (id) DO NOTHING RETURNING id`;
    return { accountId: agentAccount(agentId), created: inserted.length > 0 };
  });
}

type Movement = {
  sourceMsgId: string;
  kind: LedgerKind;
  fromAccount: string;
  toAccount: string;
  amount: bigint;
  /** The agent whose available balance must cover the amount (the debited agent). */
  payer?: string;
  correlationId?: string;
  causationId?: string;
  memo?: Record<string, unknown>;
};

function checkCommon(input: Common): { sourceMsgId: string; amount: bigint } {
  const { sourceMsgId } = input;
  if (typeof sourceMsgId !== "string" || sourceMsgId.length === 0 || sourceMsgId.length > 512) {
    throw new InvalidArgumentError(`sourceMsgId must be a non-empty string of at most 512 characters, got ${JSON.stringify(sourceMsgId)}`);
  }
  return { sourceMsgId, amount: asAmount(input.amount) };
}

/** Issues credits: system:mint → agent. `genesis` for initial grants, `reward` for human rewards. */
export async function mint(db: Db, input: MintInput): Promise<Receipt> {
  const { sourceMsgId, amount } = checkCommon(input);
  if (input.kind !== "genesis" && input.kind !== "reward") throw new InvalidArgumentError(`mint kind must be genesis or reward, got ${JSON.stringify(input.kind)}`);
  const to = checkAgentId(input.to, "to");
  return post(db, { ...extras(input), sourceMsgId, amount, kind: input.kind, fromAccount: MINT_ACCOUNT, toAccount: agentAccount(to) });
}

/** Moves credits between agents; the payer's available balance (balance − reserved) must cover it. */
export async function transfer(db: Db, input: TransferInput): Promise<Receipt> {
  const { sourceMsgId, amount } = checkCommon(input);
  const from = checkAgentId(input.from, "from");
  const to = checkAgentId(input.to, "to");
  if (from === to) throw new InvalidArgumentError(`cannot transfer from agent ${from} to itself`);
  const kind = input.kind ?? "transfer";
  if (!["transfer", "spawn", "payment", "refund"].includes(kind)) throw new InvalidArgumentError(`transfer kind ${JSON.stringify(kind)} is not one of transfer, spawn, payment, refund`);
  return post(db, { ...extras(input), sourceMsgId, amount, kind, fromAccount: agentAccount(from), toAccount: agentAccount(to), payer: from });
}

/**
 * Destroys credits spent on resources: agent → system:burn. A won bid's amount is reserved while the
 * bid is open: settle the bid (status 'won') before burning, in the same transaction.
 */
export async function burn(db: Db, input: BurnInput): Promise<Receipt> {
  const { sourceMsgId, amount } = checkCommon(input);
  const from = checkAgentId(input.from, "from");
  return post(db, { ...extras(input), sourceMsgId, amount, kind: "burn", fromAccount: agentAccount(from), toAccount: BURN_ACCOUNT, payer: from });
}

function extras(input: Common): Pick<Movement, "correlationId" | "causationId" | "memo"> {
  return { correlationId: input.correlationId, causationId: input.causationId, memo: input.memo };
}

const agentOf = (accountId: string): string => (accountId.startsWith("agent:") ? accountId.slice("agent:".length) : accountId);

function post(db: Db, m: Movement): Promise<Receipt> {
  return inTransaction(db, async (tx) => {
    const balances = await lockAccounts(tx, [m.fromAccount, m.toAccount]);
    for (const account of [m.fromAccount, m.toAccount]) {
      if (!balances.has(account)) {
        if (account.startsWith("agent:")) throw new UnknownAgentError(agentOf(account));
        throw new EconomyError(EconomyErrorCode.NotMigrated, `system account ${account} is missing: the database is not migrated`);
      }
    }

    // under the locks: a redelivery of a committed command sees its transaction here
    const earlier = await recorded(tx, m);
    if (earlier) return earlier;

    // a terminated agent's account is closed: nothing leaves it (it spends nothing) and nothing
    // enters it (credits there could never be spent again)
    await refuseTerminated(tx, [m.fromAccount, m.toAccount].filter((a) => a.startsWith("agent:")).map(agentOf), "no credits move to or from it");

    if (m.payer !== undefined) {
      const held = await reserved(tx, m.payer);
      const have = balances.get(m.fromAccount)!;
      if (have - held < m.amount) throw new InsufficientFundsError(m.payer, { requested: m.amount, balance: have, reserved: held });
    }

    // a concurrent call with the same id but other accounts is not serialised by the locks: the
    // unique index makes this insert wait for it and then do nothing
    const [row] = await tx<{ id: bigint | string; created_at: Date }[]>`
      INSERT INTO ledger_transactions (source_msg_id, kind, correlation_id, causation_id, memo)
      VALUES (${m.sourceMsgId}, ${m.kind}, ${m.correlationId ?? null}, ${m.causationId ?? null}, ${tx.json((m.memo ?? {}) as postgres.JSONValue)})
      ON CONFLICT (source_msg_id) DO NOTHING
      RETURNING id, created_at`;
    if (!row) {
      const other = await recorded(tx, m);
      if (other) return other;
      throw new EconomyError(EconomyErrorCode.Invariant, `ledger transaction ${m.sourceMsgId} vanished after a conflicting insert`);
    }
    const txId = BigInt(row.id);
    await tx`INSERT INTO ledger_entries (tx_id, account_id, delta) VALUES
               (${txId.toString()}, ${m.fromAccount}, ${(-m.amount).toString()}),
               (${txId.toString()}, ${m.toAccount}, ${m.amount.toString()})`;
    return { txId, sourceMsgId: m.sourceMsgId, kind: m.kind, fromAccount: m.fromAccount, toAccount: m.toAccount, amount: m.amount, createdAt: row.created_at, duplicate: false };
  });
}

/** The receipt of the transaction already recorded under m.sourceMsgId, if it is the same movement. */
async function recorded(tx: Db, m: Movement): Promise<Receipt | undefined> {
  const rows = await tx<{ id: bigint | string; kind: LedgerKind; created_at: Date; account_id: string; delta: bigint | string }[]>`
    SELECT t.id, t.kind, t.created_at, e.account_id, e.delta
      FROM ledger_transactions t JOIN ledger_entries e ON e.tx_id = t.id
     WHERE t.source_msg_id = ${m.sourceMsgId}`;
  if (rows.length === 0) return undefined;
  const debit = rows.find((r) => BigInt(r.delta) < 0n);
  const credit = rows.find((r) => BigInt(r.delta) > 0n);
  const first = rows[0]!;
  const same =
    rows.length === 2 &&
    first.kind === m.kind &&
    debit?.account_id === m.fromAccount &&
    credit?.account_id === m.toAccount &&
    BigInt(credit.delta) === m.amount;
  if (!same) {
    const what = debit && credit ? `${first.kind} of ${credit.delta} from ${debit.account_id} to ${credit.account_id}` : `ledger transaction ${first.id}`;
    throw new IdempotencyConflictError(m.sourceMsgId, `${what}, not ${m.kind} of ${m.amount} from ${m.fromAccount} to ${m.toAccount}`);
  }
  return {
    txId: BigInt(first.id),
    sourceMsgId: m.sourceMsgId,
    kind: first.kind,
    fromAccount: m.fromAccount,
    toAccount: m.toAccount,
    amount: m.amount,
    createdAt: first.created_at,
    duplicate: true,
  };
}

export type LedgerCheck = {
  ok: boolean;
  /** Number of agent accounts. */
  agents: number;
  transactions: number;
  /** Σ agent balances. */
  totalAgents: bigint;
  /** Issued by genesis grants. */
  genesis: bigint;
  /** Issued otherwise (rewards). */
  minted: bigint;
  /** Net received by system:burn. */
  burned: bigint;
  /** genesis + minted − burned: what totalAgents must equal. */
  expected: bigint;
  /** Σ of every account's balance, system accounts included: must be 0. */
  totalAll: bigint;
  /** Accounts below their bound: agents under zero (also a positive mint or negative burn account). */
  negative: { accountId: string; balance: bigint }[];
  /** Transactions whose entries do not sum to zero or that have fewer than two entries. */
  unbalancedTx: { txId: bigint; sourceMsgId: string; sum: bigint; entries: number }[];
  /** Accounts whose balance differs from the sum of their entries. */
  drift: { accountId: string; balance: bigint; entries: bigint }[];
  /** Agents whose open bids reserve more than their balance. */
  overReserved: { agentId: string; balance: bigint; reserved: bigint }[];
};

/**
 * Proves the ledger's invariants from one consistent snapshot: Σ agent balances = genesis + minted −
 * burned, Σ of all accounts = 0, every transaction sums to zero, every balance equals its entries,
 * no agent below zero, no agent reserving more than it has.
 */
export async function checkLedger(db: Db): Promise<LedgerCheck> {
  const run = async (tx: Db): Promise<LedgerCheck> => {
    const [totals] = await tx<{ agents: number; total_agents: string; total_all: string }[]>`
      SELECT count(*) FILTER (WHERE kind = 'agent')::int AS agents,
             coalesce(sum(balance) FILTER (WHERE kind = 'agent'), 0)::text AS total_agents,
             coalesce(sum(balance), 0)::text AS total_all
        FROM accounts`;
    const [issued] = await tx<{ genesis: string; minted: string; burned: string; transactions: number }[]>`
      SELECT coalesce(-sum(e.delta) FILTER (WHERE e.account_id = ${MINT_ACCOUNT} AND t.kind = 'genesis'), 0)::text AS genesis,
             coalesce(-sum(e.delta) FILTER (WHERE e.account_id = ${MINT_ACCOUNT} AND t.kind <> 'genesis'), 0)::text AS minted,
             coalesce(sum(e.delta) FILTER (WHERE e.account_id = ${BURN_ACCOUNT}), 0)::text AS burned,
             (SELECT count(*) FROM ledger_transactions)::int AS transactions
        FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.tx_id`;
    const negative = await tx<{ id: string; balance: string }[]>`
      SELECT id, balance::text FROM accounts
       WHERE (kind = 'agent' AND balance < 0) OR (id = ${MINT_ACCOUNT} AND balance > 0) OR (id = ${BURN_ACCOUNT} AND balance < 0)
       ORDER BY id`;
    const unbalanced = await tx<{ id: string; source_msg_id: string; sum: string; entries: number }[]>`
      SELECT t.id::text, t.source_msg_id, coalesce(sum(e.delta), 0)::text AS sum, count(e.id)::int AS entries
        FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.tx_id = t.id
       GROUP BY t.id HAVING coalesce(sum(e.delta), 0) <> 0 OR count(e.id) < 2
       ORDER BY t.id`;
    const drift = await tx<{ id: string; balance: string; entries: string }[]>`
      SELECT a.id, a.balance::text, coalesce(sum(e.delta), 0)::text AS entries
        FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
       GROUP BY a.id HAVING a.balance <> coalesce(sum(e.delta), 0)
       ORDER BY a.id`;
    const over = await tx<{ agent_id: string; balance: string; reserved: string }[]>`
      SELECT a.agent_id, a.balance::text, sum(b.amount)::text AS reserved
        FROM accounts a JOIN bids b ON b.agent_id = a.agent_id AND b.status = 'open'
       GROUP BY a.agent_id, a.balance HAVING sum(b.amount) > a.balance
       ORDER BY a.agent_id`;

    const totalAgents = BigInt(totals!.total_agents);
    const genesis = BigInt(issued!.genesis);
    const minted = BigInt(issued!.minted);
    const burned = BigInt(issued!.burned);
    const expected = genesis + minted - burned;
    const totalAll = BigInt(totals!.total_all);
    const check: LedgerCheck = {
      ok: false,
      agents: totals!.agents,
      transactions: issued!.transactions,
      totalAgents,
      genesis,
      minted,
      burned,
      expected,
      totalAll,
      negative: negative.map((r) => ({ accountId: r.id, balance: BigInt(r.balance) })),
      unbalancedTx: unbalanced.map((r) => ({ txId: BigInt(r.id), sourceMsgId: r.source_msg_id, sum: BigInt(r.sum), entries: r.entries })),
      drift: drift.map((r) => ({ accountId: r.id, balance: BigInt(r.balance), entries: BigInt(r.entries) })),
      overReserved: over.map((r) => ({ agentId: r.agent_id, balance: BigInt(r.balance), reserved: BigInt(r.reserved) })),
    };
    check.ok =
      totalAgents === expected &&
      totalAll === 0n &&
      check.negative.length === 0 &&
      check.unbalancedTx.length === 0 &&
      check.drift.length === 0 &&
      check.overReserved.length === 0;
    return check;
  };
  return isPool(db) ? ((await db.begin("isolation level repeatable read read only", (tx) => run(tx))) as LedgerCheck) : run(db);
}
