import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { Envelope } from "../host/envelope.ts";
import { verifyEnvelope } from "../host/envelope.ts";
import { loadConfigFile } from "../host/configFile.ts";
import { checkLedger } from "../economy/ledger.ts";
import { startTestNats, suiteScope, type TestNats } from "./helpers/nats.ts";
import { startTestDatabase, type TestDatabase } from "./helpers/pg.ts";
import { ROOT, startHost, waitFor } from "./helpers/host.ts";

// The economy end to end, driven the way the NATS CLI would drive it: plain JSON commands and
// requests (headers only to tag the conversation). Real nats-server, real PostgreSQL, the project's
// own functions/ and streams.config.ts.

const enc = (v: unknown) => JSON.stringify(v);

async function auditEvents(nats: TestNats): Promise<(Envelope & { seq: number; subject: string })[]> {
  const c = await nats.js.consumers.get("AUDIT");
  const info = await nats.jsm.streams.info("AUDIT");
  const out: (Envelope & { seq: number; subject: string })[] = [];
  if (info.state.messages === 0) return out;
  const batch = await c.fetch({ max_messages: info.state.messages, expires: 2000 });
  for await (const m of batch) {
    out.push({ ...(m.json<Envelope>()), seq: m.seq, subject: m.subject });
    if (m.info.pending === 0) break;
  }
  return out;
}

describe("economy end to end", () => {
  const hooks = suiteScope(after);
  let nats: TestNats;
  let db: TestDatabase;
  let lines: string[] = [];
  const correlation = "walkthrough-1";
  const tagged = () => {
    const h = natsHeaders();
    h.set("Syntropism-Correlation-Id", correlation);
    return h;
  };

  before(async () => {
    nats = await startTestNats(hooks, { auth: true });
    db = await startTestDatabase(hooks);
    process.env.DATABASE_URL = db.url;
    process.env.ECONOMY_WINDOW_MS = "500";
    const config = await loadConfigFile(resolve(ROOT, "streams.config.ts"));
    ({ lines } = await startHost(hooks, nats, { functionsDir: resolve(ROOT, "functions"), config }));
  });

  it("genesis → two bids for scarce CPU → the higher wins, is burned, the loser keeps its credits, the price moves", async () => {
    await nats.js.publish("admin.genesis", enc({ agent_id: "alice", credits: 100 }), { headers: tagged() });
    await nats.js.publish("admin.genesis", enc({ agent_id: "bob", credits: 100 }), { headers: tagged() });
    const balanceOf = async (agent: string) => (await nats.nc.request(`economic.balance.${agent}`, "", { timeout: 5000 })).json<{ agent_id: string; balance: number; available: number }>();
    // two genesis commands are handled at once: either may finish first
    await waitFor("both agents funded", async () => ((await balanceOf("bob").catch(() => null))?.balance === 100 && (await balanceOf("alice").catch(() => null))?.balance === 100 ? true : undefined));
    assert.deepEqual(await balanceOf("alice"), { agent_id: "alice", balance: 100, reserved: 0, available: 100 });

    const unknown = await nats.nc.request("economic.balance.nobody", "", { timeout: 5000 });
    assert.equal(unknown.headers?.get("Nats-Service-Error-Code"), "400");
    assert.equal(unknown.json<{ error: { code: string } }>().error.code, "UNKNOWN_AGENT");

    const before = (await nats.nc.request("market.execute_trade", enc({ agent_id: "alice" }), { timeout: 5000 })).json<{ prices: Record<string, number> }>();
    const cpuPrice = before.prices.cpu!;
    // the whole CPU supply (2000 millicores) asked twice: only one can have it
    await nats.js.publish("market.bid.alice", enc({ resource: "cpu", quantity: 2000, price: 0.01 }), { headers: tagged() });
    await nats.js.publish("market.bid.bob", enc({ resource: "cpu", quantity: 2000, price: 0.02 }), { headers: tagged() });
    // and one alice cannot afford
    await nats.js.publish("market.bid.alice", enc({ resource: "memory", quantity: 4000, price: 1 }), { headers: tagged() });

    const events = await waitFor("allocation, loss and price", async () => {
      const all = await auditEvents(nats);
      const ok = all.some((e) => e.type === "resources_allocated") && all.some((e) => e.type === "bid_lost") && all.some((e) => e.type === "price_update" && (e.payload as { demand: number }).demand > 0);
      return ok ? all : undefined;
    }, 45_000).catch(async (err) => {
      const bids = await db.sql`SELECT agent_id, status, reason, window_id FROM bids`;
      const windows = await db.sql`SELECT window_id, summary FROM market_windows ORDER BY window_id DESC LIMIT 3`;
      const types = (await auditEvents(nats)).map((e) => e.type).join(",");
      throw new Error(`${(err as Error).message}\nbids ${JSON.stringify(bids, (_k, v) => (typeof v === "bigint" ? String(v) : v))}\nwindows ${JSON.stringify(windows, (_k, v) => (typeof v === "bigint" ? String(v) : v))}\nevents ${types}\n${lines.join("\n")}`);
    });

    assert.equal((await balanceOf("bob")).balance, 60, "the winner pays 2000 × 0.02");
    assert.deepEqual(await balanceOf("alice"), { agent_id: "alice", balance: 100, reserved: 0, available: 100 }, "the loser keeps everything");

    const mine = events.filter((e) => e.correlation_id === correlation);
    const types = mine.map((e) => e.type);
    for (const t of ["agent_spawned", "credits_minted", "bid_placed", "bid_rejected", "resources_allocated", "credits_burned", "bid_lost"]) assert.ok(types.includes(t), `no ${t} in ${types.join(",")}`);
    const rejected = mine.find((e) => e.type === "bid_rejected")!;
    assert.equal((rejected.payload as { reason: string }).reason, "INSUFFICIENT_FUNDS");
    // the refused bid is also dead-lettered, with its reason
    const { listDeadLetters } = await import("../host/deadLetter.ts");
    const refused = await waitFor("the refused bid's dead letter", async () => (await listDeadLetters(nats.jsm, "DEAD_LETTERS", { prefix: "dlq", fn: "market/placeBid" }))[0]);
    assert.equal(refused.error?.code, "INSUFFICIENT_FUNDS");
    assert.equal(JSON.parse(new TextDecoder().decode(refused.data)).resource, "memory");
    const won = mine.find((e) => e.type === "resources_allocated")!;
    assert.equal((won.payload as { agent_id: string }).agent_id, "bob");
    const burned = mine.find((e) => e.type === "credits_burned")!;
    assert.equal((burned.payload as { amount: number }).amount, 40);
    const lost = mine.find((e) => e.type === "bid_lost")!;
    assert.deepEqual([(lost.payload as { agent_id: string }).agent_id, (lost.payload as { reason: string }).reason], ["alice", "OUTBID"]);
    // the chain: each placed bid's event is caused by its command; allocation by the window's tick
    const placed = mine.filter((e) => e.type === "bid_placed");
    assert.equal(placed.length, 2);
    for (const p of placed) assert.ok(p.causation_id && !p.causation_id.startsWith("schedule:"));
    assert.ok(won.causation_id!.includes("market/tick") || won.causation_id!.startsWith("MARKET:"), `allocation caused by ${won.causation_id}`);
    assert.ok(placed.every((p) => p.seq < won.seq) && won.seq < burned.seq);
    for (const { seq: _seq, subject: _subject, ...e } of events) assert.equal(verifyEnvelope(e as Envelope).ok, true, `event ${e.id} does not verify`);

    const cpu = events.filter((e) => e.type === "price_update" && (e.payload as { resource: string; demand: number }).resource === "cpu" && (e.payload as { demand: number }).demand > 0).at(-1)!;
    const pu = cpu.payload as { price: number; previous_price: number; utilization: number };
    assert.equal(pu.utilization, 1);
    assert.ok(pu.price > pu.previous_price, `cpu price did not rise: ${pu.previous_price} → ${pu.price}`);
    assert.ok(pu.previous_price <= cpuPrice * 1.13);

    // read models: balances and prices in KV, rebuilt from the ledger
    const { Kvm } = await import("@nats-io/kv");
    const kvm = new Kvm(nats.nc);
    const state = (await (await kvm.open("agent_state")).get("bob"))!.json<{ balance: number }>();
    assert.equal(state.balance, 60);
    const price = (await (await kvm.open("market_prices")).get("cpu"))!.json<{ price: number }>();
    assert.ok(price.price >= pu.price * 0.8);

    const check = await checkLedger(db.sql);
    assert.equal(check.ok, true, JSON.stringify(check, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
  });

  it("a bundle bid on market.bid.<id>: won whole, bundle_allocated on AUDIT with the limits and the window it runs in; a misspelt one dead-lettered", async () => {
    await nats.js.publish("admin.genesis", enc({ agent_id: "carol", credits: 50 }));
    await waitFor("carol funded", async () => ((await nats.nc.request("economic.balance.carol", "", { timeout: 5000 }).then((m) => m.json<{ balance: number }>()).catch(() => null))?.balance === 50 ? true : undefined));
    await nats.js.publish("market.bid.carol", enc({ bundle: { cpu: 500, memory: 256 }, price: 2 }));
    await nats.js.publish("market.bid.carol", enc({ bundle: { cpu: 500, mem: 256 }, price: 2 }));
    const allocated = await waitFor("bundle_allocated", async () => (await auditEvents(nats)).find((e) => e.type === "bundle_allocated"), 45_000).catch((err) => {
      throw new Error(`${(err as Error).message}\n${lines.join("\n")}`);
    });
    assert.equal(allocated.subject, "market.bundle_allocated");
    const p = allocated.payload as Record<string, number | string | boolean>;
    assert.deepEqual([p.agent_id, p.cpu, p.memory_mb, p.tokens, p.attention, p.amount, p.runnable, p.duration_ms], ["carol", 500, 256, 0, 0, 2, true, 500]);
    assert.equal(p.run_window_id, (p.window_id as number) + 1);
    assert.deepEqual([p.window_start, p.window_end], [(p.run_window_id as number) * 500, ((p.run_window_id as number) + 1) * 500]);
    const [row] = await db.sql<{ id: bigint; cpu: bigint; memory_mb: bigint }[]>`SELECT id, cpu, memory_mb FROM resource_bundles WHERE agent_id = 'carol'`;
    assert.deepEqual([String(row!.id), Number(row!.cpu), Number(row!.memory_mb)], [p.bundle_id, 500, 256]);
    const bal = (await nats.nc.request("economic.balance.carol", "", { timeout: 5000 })).json<{ balance: number; reserved: number }>();
    assert.deepEqual([bal.balance, bal.reserved], [48, 0]);
    const { listDeadLetters } = await import("../host/deadLetter.ts");
    const refused = await waitFor("the misspelt bundle's dead letter", async () => (await listDeadLetters(nats.jsm, "DEAD_LETTERS", { prefix: "dlq", fn: "market/placeBid" })).find((d) => d.error?.code === "HOST_ERR_INVALID_PAYLOAD"));
    assert.match(refused.error!.message, /bundle\.mem/);
  });

  it("transfers, spawns with lineage, rewards mint, prompts and messages are audited; bad commands are dead-lettered", async () => {
    await nats.js.publish("economic.transfer.bob", enc({ to: "alice", amount: 10 }));
    await nats.js.publish("economic.spawn.alice", enc({ child_id: "alice_jr", credits: 30 }));
    // commands run in parallel: the child must exist before it can ask anything
    await waitFor("child spawned", async () => (await auditEvents(nats)).find((e) => e.type === "agent_spawned" && (e.payload as { agent_id: string }).agent_id === "alice_jr"));
    await nats.js.publish("agent.alice_jr.prompt", enc({ question: "Which plan?" }));
    await nats.js.publish("agent.alice.message", enc({ to: "bob", body: "thanks" }));
    const prompt = await waitFor("prompt event", async () => (await auditEvents(nats)).find((e) => e.type === "prompt_posted")).catch((err) => {
      throw new Error(`${(err as Error).message}\n${lines.join("\n")}`);
    });
    const promptId = (prompt.payload as { prompt_id: string }).prompt_id;
    await nats.js.publish("admin.reward.grant", enc({ agent_id: "alice_jr", amount: 5, prompt_id: promptId, response: "plan B", reason: "useful" }));
    await nats.js.publish("economic.transfer.bob", enc({ to: "alice", amount: 1_000_000 })); // cannot afford
    await waitFor("reward", async () => (await auditEvents(nats)).find((e) => e.type === "reward_granted"));
    const { spawn } = await import("node:child_process");
    const bal = async (a: string) => (await nats.nc.request(`economic.balance.${a}`, "", { timeout: 5000 })).json<{ balance: number }>().balance;
    assert.equal(await bal("bob"), 50);
    assert.equal(await bal("alice"), 80);
    assert.equal(await bal("alice_jr"), 35);
    const [lineage] = await db.sql<{ parent_id: string }[]>`SELECT parent_id FROM agents WHERE id = 'alice_jr'`;
    assert.equal(lineage!.parent_id, "alice");
    const types = (await auditEvents(nats)).map((e) => e.type);
    for (const t of ["credits_transferred", "agent_spawned", "reward_granted", "message_sent"]) assert.ok(types.includes(t), `no ${t}`);
    const { listDeadLetters } = await import("../host/deadLetter.ts");
    const dead = await waitFor("dead letter", async () => (await listDeadLetters(nats.jsm, "DEAD_LETTERS", { prefix: "dlq", fn: "economy/transfer" }))[0]);
    assert.equal(dead.error?.code, "INSUFFICIENT_FUNDS");
    // balance, prices and a bid in one round trip
    const trade = (await nats.nc.request("market.execute_trade", enc({ agent_id: "alice", bid: { resource: "memory", quantity: 100, price: 0.01 } }), { timeout: 5000 })).json<{
      available: number;
      reserved: number;
      prices: Record<string, number>;
      bid: { status: string; bidId: string };
    }>();
    assert.equal(trade.bid.status, "placed");
    assert.equal(trade.reserved, 1);
    assert.equal(trade.available, 79);
    assert.deepEqual(Object.keys(trade.prices).sort(), ["attention", "cpu", "memory", "tokens"]);

    // the read models come back from the ledger
    const { Kvm } = await import("@nats-io/kv");
    const agentsKv = await new Kvm(nats.nc).open("agent_state");
    await agentsKv.purge("alice_jr");
    const rebuilt = await new Promise<number | null>((done) => {
      const child = spawn(process.execPath, ["--import", "tsx", resolve(ROOT, "economy/cli.ts"), "projections", "rebuild"], { cwd: ROOT, env: { ...process.env, NATS_URL: nats.url, NATS_CREDS: nats.auth!.credsFile("admin"), DATABASE_URL: db.url }, stdio: "ignore" });
      child.on("exit", done);
    });
    assert.equal(rebuilt, 0);
    assert.equal((await agentsKv.get("alice_jr"))!.json<{ balance: number; parent_id: string }>().parent_id, "alice");

    // a reward from the operator's CLI
    const code = await new Promise<number | null>((done) => {
      const child = spawn(process.execPath, ["--import", "tsx", resolve(ROOT, "economy/cli.ts"), "reward", "grant", "--agent", "bob", "--amount", "2", "--reason", "kind words"], {
        cwd: ROOT,
        env: { ...process.env, NATS_URL: nats.url, NATS_CREDS: nats.auth!.credsFile("admin") },
        stdio: "ignore",
      });
      child.on("exit", done);
    });
    assert.equal(code, 0);
    await waitFor("CLI reward", async () => ((await bal("bob")) === 52 ? true : undefined));
    const check = await checkLedger(db.sql);
    assert.equal(check.ok, true);
    assert.equal(check.minted, 7_000_000n);
  });
});
