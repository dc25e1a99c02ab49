import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  balance,
  burn,
  checkLedger,
  IdempotencyConflictError,
  InsufficientFundsError,
  InvalidAmountError,
  InvalidArgumentError,
  mint,
  openAccount,
  transfer,
  UnknownAgentError,
  type Db,
  type Receipt,
  type Sql,
} from "../economy/mod.ts";
import { formatCredits, toCredits, toMicro } from "../economy/money.ts";
import { suiteScope } from "./helpers/nats.ts";
import { startTestDatabase, testDatabaseFactory } from "./helpers/pg.ts";

// The double-entry ledger against a real PostgreSQL: every refusal, idempotency, atomicity with a
// caller's transaction, and a property test of random concurrent, redelivered and crashing
// operations checked against a model computed in JS.

async function openBid(sql: Db, agentId: string, amount: bigint, sourceMsgId: string): Promise<void> {
  await sql`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, source_msg_id)
            VALUES (${agentId}, 1, 'cpu', 1, ${amount.toString()}, ${amount.toString()}, ${sourceMsgId})`;
}

const rejects = async (p: Promise<unknown>, cls: new (...args: never[]) => Error, code: string) => {
  await assert.rejects(p, (err: Error & { code?: string }) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err.name}: ${err.message}`);
    assert.equal(err.code, code);
    return true;
  });
};

describe("money", () => {
  it("toMicro converts credits with at most 6 decimals exactly", () => {
    assert.equal(toMicro(1), 1_000_000n);
    assert.equal(toMicro(0.1), 100_000n);
    assert.equal(toMicro(1.000001), 1_000_001n);
    assert.equal(toMicro(-2.5), -2_500_000n);
    assert.equal(toMicro(123456789.123456), 123456789123456n);
  });

  it("toMicro refuses non-finite, too precise and unsafe values", () => {
    for (const bad of [Number.NaN, Infinity, -Infinity, 0.0000001, 1.2345678, 1e12, "1" as unknown as number]) {
      assert.throws(() => toMicro(bad), (e: Error & { code?: string }) => e instanceof InvalidAmountError && e.code === "INVALID_AMOUNT", String(bad));
    }
  });

  it("toCredits and formatCredits", () => {
    assert.equal(toCredits(1_500_000n), 1.5);
    assert.equal(toCredits(1), 0.000001);
    assert.throws(() => toCredits(1.5), InvalidAmountError);
    assert.throws(() => toCredits(2n ** 60n), InvalidAmountError);
    assert.equal(formatCredits(1_500_000n), "1.5");
    assert.equal(formatCredits(-1n), "-0.000001");
    assert.equal(formatCredits(2n ** 63n - 1n), "9223372036854.775807");
    // below 10^15 micro-credits (a billion credits) every amount survives the trip through a double
    fc.assert(fc.property(fc.integer({ min: -(1e15 - 1), max: 1e15 - 1 }), (m) => toMicro(toCredits(m)) === BigInt(m)));
    // beyond, an amount either survives or is refused, never silently rounded
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 62n), max: 2n ** 62n }), (m) => {
        try {
          return toMicro(toCredits(m)) === m;
        } catch (err) {
          return err instanceof InvalidAmountError;
        }
      }),
    );
  });
});

describe("ledger - operations and refusals", () => {
  const hooks = suiteScope(after);
  let sql: Sql;

  before(async () => {
    ({ sql } = await startTestDatabase(hooks));
    for (const a of ["alice", "bob", "carol"]) await openAccount(sql, a);
    await mint(sql, { sourceMsgId: "g-alice", to: "alice", amount: 1_000n, kind: "genesis" });
    await mint(sql, { sourceMsgId: "g-bob", to: "bob", amount: 500n, kind: "genesis" });
  });

  it("openAccount is idempotent and records lineage", async () => {
    assert.deepEqual(await openAccount(sql, "dave", { parentId: "alice", sourceMsgId: "spawn-dave" }), { accountId: "agent:dave", created: true });
    assert.deepEqual(await openAccount(sql, "dave"), { accountId: "agent:dave", created: false });
    const [row] = await sql`SELECT parent_id, status, source_msg_id FROM agents WHERE id = 'dave'`;
    assert.deepEqual({ ...row }, { parent_id: "alice", status: "active", source_msg_id: "spawn-dave" });
    assert.deepEqual(await balance(sql, "dave"), { balance: 0n, reserved: 0n, available: 0n });
  });

  it("mint, transfer and burn move credits and return receipts", async () => {
    const t = await transfer(sql, { sourceMsgId: "t1", from: "alice", to: "carol", amount: 100n, correlationId: "run-1", memo: { why: "test" } });
    assert.equal(t.duplicate, false);
    assert.equal(t.kind, "transfer");
    assert.equal(t.fromAccount, "agent:alice");
    assert.equal(t.toAccount, "agent:carol");
    assert.equal(t.amount, 100n);
    const b = await burn(sql, { sourceMsgId: "b1", from: "carol", amount: 40 });
    assert.equal(b.toAccount, "system:burn");
    const r = await mint(sql, { sourceMsgId: "r1", to: "carol", amount: 7n, kind: "reward" });
    assert.equal(r.fromAccount, "system:mint");
    assert.deepEqual(await balance(sql, "carol"), { balance: 67n, reserved: 0n, available: 67n });
    const [tx] = await sql`SELECT kind, correlation_id, memo FROM ledger_transactions WHERE source_msg_id = 't1'`;
    assert.deepEqual({ ...tx }, { kind: "transfer", correlation_id: "run-1", memo: { why: "test" } });
    const check = await checkLedger(sql);
    assert.equal(check.ok, true, JSON.stringify(check, (_k, v) => (typeof v === "bigint" ? String(v) : v)));
    assert.equal(check.genesis, 1_500n);
    assert.equal(check.minted, 7n);
    assert.equal(check.burned, 40n);
    assert.equal(check.totalAgents, 1_467n);
  });

  it("a redelivered command returns the first receipt, marked duplicate, and moves nothing", async () => {
    const first = await transfer(sql, { sourceMsgId: "dup-1", from: "bob", to: "alice", amount: 10n });
    const before = await balance(sql, "bob");
    const [a, b] = await Promise.all([
      transfer(sql, { sourceMsgId: "dup-1", from: "bob", to: "alice", amount: 10n }),
      transfer(sql, { sourceMsgId: "dup-1", from: "bob", to: "alice", amount: 10 }),
    ]);
    for (const again of [a, b]) {
      assert.equal(again.duplicate, true);
      assert.equal(again.txId, first.txId);
      assert.deepEqual(again.createdAt, first.createdAt);
    }
    assert.deepEqual(await balance(sql, "bob"), before);
  });

  it("a duplicate is answered even when the funds are gone by then", async () => {
    await openAccount(sql, "erin");
    await mint(sql, { sourceMsgId: "g-erin", to: "erin", amount: 5n, kind: "genesis" });
    const first = await burn(sql, { sourceMsgId: "erin-burn", from: "erin", amount: 5n });
    const again = await burn(sql, { sourceMsgId: "erin-burn", from: "erin", amount: 5n });
    assert.deepEqual(again, { ...first, duplicate: true });
  });

  it("INSUFFICIENT_FUNDS: nothing is written", async () => {
    const before = await balance(sql, "bob");
    await rejects(transfer(sql, { sourceMsgId: "too-much", from: "bob", to: "alice", amount: before.balance + 1n }), InsufficientFundsError, "INSUFFICIENT_FUNDS");
    await rejects(burn(sql, { sourceMsgId: "too-much-burn", from: "bob", amount: before.balance + 1n }), InsufficientFundsError, "INSUFFICIENT_FUNDS");
    const err = await transfer(sql, { sourceMsgId: "too-much", from: "bob", to: "alice", amount: 10_000n }).catch((e: unknown) => e);
    assert.ok(err instanceof InsufficientFundsError);
    assert.equal(err.agentId, "bob");
    assert.equal(err.requested, 10_000n);
    assert.equal(err.available, before.available);
    assert.deepEqual(await balance(sql, "bob"), before);
    assert.equal((await sql`SELECT 1 FROM ledger_transactions WHERE source_msg_id IN ('too-much', 'too-much-burn')`).length, 0);
  });

  it("open bids reserve funds: available = balance − reserved", async () => {
    await openAccount(sql, "frank");
    await mint(sql, { sourceMsgId: "g-frank", to: "frank", amount: 100n, kind: "genesis" });
    await openBid(sql, "frank", 70n, "bid-frank-1");
    assert.deepEqual(await balance(sql, "frank"), { balance: 100n, reserved: 70n, available: 30n });
    const err = await transfer(sql, { sourceMsgId: "frank-1", from: "frank", to: "alice", amount: 31n }).catch((e: unknown) => e);
    assert.ok(err instanceof InsufficientFundsError);
    assert.deepEqual([err.balance, err.reserved, err.available], [100n, 70n, 30n]);
    await transfer(sql, { sourceMsgId: "frank-2", from: "frank", to: "alice", amount: 30n });

    // the window clears: the bid is won, then its amount burned, in one transaction
    await sql.begin(async (tx) => {
      await tx`UPDATE bids SET status = 'won', settled_at = now() WHERE source_msg_id = 'bid-frank-1'`;
      await burn(tx, { sourceMsgId: "bid-frank-1:pay", from: "frank", amount: 70n });
    });
    assert.deepEqual(await balance(sql, "frank"), { balance: 0n, reserved: 0n, available: 0n });
    assert.equal((await checkLedger(sql)).ok, true);
  });

  it("UNKNOWN_AGENT for every unknown party", async () => {
    await rejects(mint(sql, { sourceMsgId: "u1", to: "nobody", amount: 1n, kind: "genesis" }), UnknownAgentError, "UNKNOWN_AGENT");
    await rejects(transfer(sql, { sourceMsgId: "u2", from: "nobody", to: "alice", amount: 1n }), UnknownAgentError, "UNKNOWN_AGENT");
    await rejects(transfer(sql, { sourceMsgId: "u3", from: "alice", to: "nobody", amount: 1n }), UnknownAgentError, "UNKNOWN_AGENT");
    await rejects(burn(sql, { sourceMsgId: "u4", from: "nobody", amount: 1n }), UnknownAgentError, "UNKNOWN_AGENT");
    await rejects(balance(sql, "nobody"), UnknownAgentError, "UNKNOWN_AGENT");
    await rejects(openAccount(sql, "orphan", { parentId: "nobody" }), UnknownAgentError, "UNKNOWN_AGENT");
    const err = await transfer(sql, { sourceMsgId: "u5", from: "alice", to: "ghost", amount: 1n }).catch((e: unknown) => e);
    assert.ok(err instanceof UnknownAgentError && err.agentId === "ghost");
    assert.equal((await sql`SELECT 1 FROM agents WHERE id = 'orphan'`).length, 0);
  });

  it("INVALID_AMOUNT for zero, negative, fractional, unsafe and oversized amounts", async () => {
    for (const amount of [0n, -5n, 0, 1.5, Number.NaN, 2 ** 60, 2n ** 63n, "10" as unknown as bigint]) {
      await rejects(transfer(sql, { sourceMsgId: `amt-${String(amount)}`, from: "alice", to: "bob", amount }), InvalidAmountError, "INVALID_AMOUNT");
    }
  });

  it("INVALID_ARGUMENT for bad ids, a self-transfer, a missing message id and a wrong kind", async () => {
    await rejects(transfer(sql, { sourceMsgId: "self", from: "alice", to: "alice", amount: 1n }), InvalidArgumentError, "INVALID_ARGUMENT");
    await rejects(transfer(sql, { sourceMsgId: "", from: "alice", to: "bob", amount: 1n }), InvalidArgumentError, "INVALID_ARGUMENT");
    await rejects(transfer(sql, { sourceMsgId: "dot", from: "a.b", to: "bob", amount: 1n }), InvalidArgumentError, "INVALID_ARGUMENT");
    await rejects(openAccount(sql, "has space"), InvalidArgumentError, "INVALID_ARGUMENT");
    await rejects(mint(sql, { sourceMsgId: "k", to: "alice", amount: 1n, kind: "transfer" as "reward" }), InvalidArgumentError, "INVALID_ARGUMENT");
    await rejects(transfer(sql, { sourceMsgId: "k2", from: "alice", to: "bob", amount: 1n, kind: "genesis" as "transfer" }), InvalidArgumentError, "INVALID_ARGUMENT");
  });

  it("IDEMPOTENCY_CONFLICT when a used message id names another movement", async () => {
    await transfer(sql, { sourceMsgId: "conflict-1", from: "alice", to: "bob", amount: 3n });
    await rejects(transfer(sql, { sourceMsgId: "conflict-1", from: "alice", to: "bob", amount: 4n }), IdempotencyConflictError, "IDEMPOTENCY_CONFLICT");
    await rejects(burn(sql, { sourceMsgId: "conflict-1", from: "alice", amount: 3n }), IdempotencyConflictError, "IDEMPOTENCY_CONFLICT");
    // other accounts: not serialised by the row locks, caught by the unique index
    await openAccount(sql, "gina");
    await rejects(transfer(sql, { sourceMsgId: "conflict-1", from: "bob", to: "gina", amount: 3n }), IdempotencyConflictError, "IDEMPOTENCY_CONFLICT");
  });

  it("runs inside a caller's transaction: a bid and its payment commit or roll back together", async () => {
    await openAccount(sql, "hank");
    await mint(sql, { sourceMsgId: "g-hank", to: "hank", amount: 50n, kind: "genesis" });
    await assert.rejects(
      sql.begin(async (tx) => {
        await transfer(tx, { sourceMsgId: "hank-pay", from: "hank", to: "alice", amount: 20n });
        await openBid(tx, "hank", 30n, "hank-bid");
        throw new Error("crash after both writes");
      }),
      /crash after both writes/,
    );
    assert.deepEqual(await balance(sql, "hank"), { balance: 50n, reserved: 0n, available: 50n });
    assert.equal((await sql`SELECT 1 FROM bids WHERE source_msg_id = 'hank-bid'`).length, 0);

    // a refusal inside the transaction leaves it usable: the caller records a rejected bid instead
    await sql.begin(async (tx) => {
      const err = await burn(tx, { sourceMsgId: "hank-big", from: "hank", amount: 51n }).catch((e: unknown) => e);
      assert.ok(err instanceof InsufficientFundsError);
      await tx`INSERT INTO bids (agent_id, window_id, resource, quantity, price_per_unit, amount, status, reason, settled_at, source_msg_id)
               VALUES ('hank', 1, 'cpu', 51, 1, 51, 'rejected', ${err.code}, now(), 'hank-big')`;
    });
    const [bid] = await sql`SELECT status, reason FROM bids WHERE source_msg_id = 'hank-big'`;
    assert.deepEqual({ ...bid }, { status: "rejected", reason: "INSUFFICIENT_FUNDS" });
  });

  it("opposite transfers at once never deadlock and conserve credits", async () => {
    await openAccount(sql, "ivy");
    await openAccount(sql, "jay");
    await mint(sql, { sourceMsgId: "g-ivy", to: "ivy", amount: 1_000n, kind: "genesis" });
    await mint(sql, { sourceMsgId: "g-jay", to: "jay", amount: 1_000n, kind: "genesis" });
    const ops: Promise<Receipt>[] = [];
    for (let i = 0; i < 40; i++) {
      ops.push(transfer(sql, { sourceMsgId: `ivy-jay-${i}`, from: "ivy", to: "jay", amount: 7n }));
      ops.push(transfer(sql, { sourceMsgId: `jay-ivy-${i}`, from: "jay", to: "ivy", amount: 5n }));
    }
    await Promise.all(ops);
    assert.equal((await balance(sql, "ivy")).balance, 1_000n - 40n * 2n);
    assert.equal((await balance(sql, "jay")).balance, 1_000n + 40n * 2n);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: random operations, concurrent, redelivered and crashing, against a model.

type OpSpec =
  | { t: "mint"; to: number; amount: bigint; kind: "genesis" | "reward" }
  | { t: "transfer"; from: number; to: number; amount: bigint }
  | { t: "burn"; from: number; amount: bigint };
/** How the command is delivered: each entry is one delivery, all at once; "crash" rolls back after the ledger call. */
type Delivery = "ok" | "crash";
type Planned = { op: OpSpec; deliveries: Delivery[] };

const AGENTS = 4;
const GHOST = AGENTS; // an index that names no agent

const amountArb = fc.bigInt({ min: 1n, max: 400n });
const agentArb = fc.integer({ min: 0, max: AGENTS }); // GHOST now and then
const opArb: fc.Arbitrary<OpSpec> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ t: fc.constant("mint" as const), to: agentArb, amount: amountArb, kind: fc.constantFrom("genesis" as const, "reward" as const) }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant("transfer" as const), from: agentArb, to: agentArb, amount: amountArb }).filter((o) => o.from !== o.to) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("burn" as const), from: agentArb, amount: amountArb }) },
);
const deliveriesArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Delivery[]>(["ok"]) },
  { weight: 2, arbitrary: fc.constant<Delivery[]>(["ok", "ok"]) },
  { weight: 1, arbitrary: fc.constant<Delivery[]>(["ok", "ok", "ok"]) },
  { weight: 1, arbitrary: fc.constant<Delivery[]>(["crash"]) },
  { weight: 2, arbitrary: fc.constant<Delivery[]>(["crash", "ok"]) },
);
const planArb = fc.record({
  genesis: fc.array(fc.bigInt({ min: 0n, max: 1_500n }), { minLength: AGENTS, maxLength: AGENTS }),
  // share of each genesis grant held by an open bid
  reservePct: fc.array(fc.integer({ min: 0, max: 100 }), { minLength: AGENTS, maxLength: AGENTS }),
  batches: fc.array(fc.array(fc.record({ op: opArb, deliveries: deliveriesArb }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 6 }),
});

class Crash extends Error {}

describe("ledger - property: concurrent, redelivered and crashing operations", () => {
  const hooks = suiteScope(after);
  let shared: Sql;
  let factory: ReturnType<typeof testDatabaseFactory>;
  let failed = false;
  let runNo = 0;

  before(async () => {
    ({ sql: shared } = await startTestDatabase(hooks, { max: 12 }));
    factory = testDatabaseFactory(hooks);
  });

  it("checkLedger holds, balances match the model, and no command moves credits twice", async () => {
    let runs = 0;
    let committedTotal = 0;
    let refusedTotal = 0;
    let duplicatesTotal = 0;
    await fc.assert(
      fc.asyncProperty(planArb, async (plan) => {
        runs++;
        // Runs share one database (each with its own agents) until one fails; from then on, while
        // fast-check shrinks, each run gets a fresh database so that the broken state it left
        // cannot make every smaller case fail too.
        const fresh = failed ? await factory.create({ max: 12 }) : undefined;
        const sql = fresh?.sql ?? shared;
        try {
        const run = `p${++runNo}`;
        const agent = (i: number) => (i === GHOST ? `${run}_ghost` : `${run}_a${i}`);
        const model = new Map<string, bigint>();
        const held = new Map<string, bigint>();
        for (let i = 0; i < AGENTS; i++) {
          await openAccount(sql, agent(i));
          model.set(agent(i), 0n);
          if (plan.genesis[i]! > 0n) {
            await mint(sql, { sourceMsgId: `${run}-genesis-${i}`, to: agent(i), amount: plan.genesis[i]!, kind: "genesis" });
            model.set(agent(i), plan.genesis[i]!);
          }
          const reserve = (plan.genesis[i]! * BigInt(plan.reservePct[i]!)) / 100n;
          held.set(agent(i), reserve);
          if (reserve > 0n) await openBid(sql, agent(i), reserve, `${run}-bid-${i}`);
        }
        const available = (a: string) => model.get(a)! - held.get(a)!;

        const call = (db: Db, op: OpSpec, id: string): Promise<Receipt> => {
          if (op.t === "mint") return mint(db, { sourceMsgId: id, to: agent(op.to), amount: op.amount, kind: op.kind });
          if (op.t === "transfer") return transfer(db, { sourceMsgId: id, from: agent(op.from), to: agent(op.to), amount: op.amount });
          return burn(db, { sourceMsgId: id, from: agent(op.from), amount: op.amount });
        };
        const deliver = async (op: OpSpec, id: string, how: Delivery): Promise<Receipt | Error> => {
          try {
            if (how === "ok") return await call(sql, op, id);
            return await sql.begin(async (tx) => {
              await call(tx, op, id);
              throw new Crash("crashed after the ledger call");
            });
          } catch (err) {
            return err as Error;
          }
        };

        const committed = new Map<string, Receipt>();
        let n = 0;
        for (const batch of plan.batches) {
          const planned = batch.map((p) => ({ ...p, id: `${run}-op-${n++}` }));
          const touched = (p: Planned) => (p.op.t === "mint" ? [p.op.to] : p.op.t === "transfer" ? [p.op.from, p.op.to] : [p.op.from]);
          const results = await Promise.all(planned.map((p) => Promise.all(p.deliveries.map((how) => deliver(p.op, p.id, how)))));

          planned.forEach((p, k) => {
            const outcomes = results[k]!;
            const receipts = outcomes.filter((o): o is Receipt => !(o instanceof Error));
            const errors = outcomes.filter((o): o is Error => o instanceof Error);
            for (const e of errors) {
              assert.ok(e instanceof Crash || e instanceof InsufficientFundsError || e instanceof UnknownAgentError, `unexpected ${e.name}: ${e.message}`);
              if (e instanceof InsufficientFundsError) assert.ok(e.available < e.requested);
            }
            const ghost = touched(p).includes(GHOST);
            if (ghost) {
              assert.equal(receipts.length, 0);
              assert.ok(errors.every((e) => e instanceof UnknownAgentError), "an unknown agent is refused by every delivery");
              refusedTotal++;
              return;
            }
            // one movement at most, however many deliveries: the others are its duplicates
            const fresh = receipts.filter((r) => !r.duplicate);
            assert.ok(fresh.length <= 1, `${p.id}: moved ${fresh.length} times`);
            assert.ok(receipts.every((r) => r.txId === receipts[0]!.txId), `${p.id}: different transactions`);
            if (receipts.length > 0) {
              assert.equal(fresh.length, 1, `${p.id}: only duplicates of a movement no delivery made`);
              committed.set(p.id, fresh[0]!);
              duplicatesTotal += receipts.length - 1;
            }
            // when nothing else in the batch touches the payer, the model knows whether funds sufficed
            const payer = p.op.t === "transfer" || p.op.t === "burn" ? p.op.from : undefined;
            const alone = payer !== undefined && planned.every((q) => q === p || !touched(q).includes(payer));
            if (alone && p.deliveries.includes("ok")) {
              const enough = available(agent(payer!)) >= p.op.amount;
              assert.equal(receipts.length > 0, enough, `${p.id}: funds ${available(agent(payer!))} for ${p.op.amount}`);
            }
            if (receipts.length === 0 && errors.some((e) => e instanceof InsufficientFundsError)) refusedTotal++;
          });

          for (const p of planned) {
            if (!committed.has(p.id)) continue;
            const { op } = p;
            if (op.t === "mint") model.set(agent(op.to), model.get(agent(op.to))! + op.amount);
            if (op.t === "burn") model.set(agent(op.from), model.get(agent(op.from))! - op.amount);
            if (op.t === "transfer") {
              model.set(agent(op.from), model.get(agent(op.from))! - op.amount);
              model.set(agent(op.to), model.get(agent(op.to))! + op.amount);
            }
          }
        }
        committedTotal += committed.size;

        // late redeliveries of every committed command: duplicates of the first receipt
        let k = 0;
        for (const batch of plan.batches) {
          for (const p of batch) {
            const id = `${run}-op-${k++}`;
            const first = committed.get(id);
            if (!first) continue;
            const again = await call(sql, p.op, id);
            assert.deepEqual(again, { ...first, duplicate: true });
          }
        }

        for (let i = 0; i < AGENTS; i++) {
          const b = await balance(sql, agent(i));
          assert.equal(b.balance, model.get(agent(i)), `${agent(i)} balance`);
          assert.equal(b.reserved, held.get(agent(i)));
          assert.ok(b.available >= 0n);
        }
        const [txs] = await sql`SELECT count(*)::int AS n FROM ledger_transactions WHERE source_msg_id LIKE ${`${run}-op-%`}`;
        assert.equal(txs!.n, committed.size, "one ledger transaction per committed command");
        const check = await checkLedger(sql);
        assert.ok(check.ok, `checkLedger: ${JSON.stringify(check, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
        } catch (err) {
          failed = true;
          throw err;
        } finally {
          await fresh?.drop();
        }
      }),
      // shrinking runs on fresh databases (~0.5 s each): bounded, reporting the smallest case found
      { numRuns: 60, interruptAfterTimeLimit: 30_000, markInterruptAsFailure: true },
    );
    // the generator exercises what it should
    assert.ok(runs >= 60);
    assert.ok(committedTotal > 100, `committed ${committedTotal}`);
    assert.ok(refusedTotal > 5, `refused ${refusedTotal}`);
    assert.ok(duplicatesTotal > 20, `duplicates ${duplicatesTotal}`);
  });
});
