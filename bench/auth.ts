import { createUser, fromSeed } from "@nats-io/nkeys";
import { encodeUser } from "@nats-io/jwt";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { startTestNats, type TestNats } from "../testing/nats.ts";
import { log, nowMs, payloadOf, ratio, round, summarize, verdictOf, type BenchResult, type Summary } from "./lib.ts";
import type { Options } from "./options.ts";
import { agentPermissions } from "../auth/permissions.ts";

// What authentication costs (auth/): the same request/reply and the same stored publishes on a
// server without authentication and on one with the project's JWT authentication, where the
// requester is an agent whose subjects reach the service through the agents' account's imports
// (an extra hop in the server for each message), and what minting one agent's credentials costs,
// with node's native Ed25519 (auth/keys.ts) against the pure-JS nkeys.

type Row = { variant: string; summary?: Summary; perSec: number };

async function roundTrips(nc: NatsConnection, subject: string, count: number, size: number): Promise<{ rtts: Float64Array; seconds: number }> {
  const rtts = new Float64Array(count);
  const body = payloadOf(size, nowMs(), 0);
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await nc.request(subject, body, { timeout: 5000 });
    rtts[i] = performance.now() - t;
  }
  return { rtts, seconds: (performance.now() - start) / 1000 };
}

/** Stored publishes, 64 in flight: PubAcks per second. */
async function publishes(nc: NatsConnection, subject: string, count: number, size: number): Promise<number> {
  const js = jetstream(nc);
  const body = payloadOf(size, nowMs(), 0);
  const start = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < count) {
      next++;
      await js.publish(subject, body);
    }
  };
  await Promise.all(Array.from({ length: 64 }, lane));
  return Math.round(count / ((performance.now() - start) / 1000));
}

async function stack(auth: boolean, hooks: (() => Promise<void>)[]): Promise<{ nats: TestNats; service: NatsConnection; client: NatsConnection }> {
  const nats = await startTestNats({ after: (fn: () => Promise<void>) => void hooks.push(fn) }, { auth });
  const service = auth ? await nats.auth!.connect("service") : nats.nc;
  service.subscribe("economic.balance.*", { callback: (_e, m) => void m.respond(m.data) });
  await service.flush();
  await nats.jsm.streams.add({ name: "MARKET", subjects: ["market.bid.*"], storage: "memory" as never });
  const client = auth ? await nats.auth!.connect({ agent: "bench" }) : await connect({ servers: nats.url });
  if (!auth) hooks.push(() => client.close());
  return { nats, service, client };
}

export async function authCost(o: Options): Promise<BenchResult> {
  const hooks: (() => Promise<void>)[] = [];
  const rows: Row[] = [];
  let version = "unknown";
  try {
    for (const auth of [false, true]) {
      const { nats, client } = await stack(auth, hooks);
      version = nats.nc.info?.version ?? version;
      const name = auth ? "agent credentials, via the agents' account" : "no authentication";
      await roundTrips(client, "economic.balance.bench", o.warmup, o.size);
      const { rtts, seconds } = await roundTrips(client, "economic.balance.bench", o.count, o.size);
      const summary = summarize(rtts);
      rows.push({ variant: `request/reply, ${name}`, summary, perSec: Math.round(o.count / seconds) });
      log(`auth request/reply ${name}: p50 ${summary.p50} ms, p99 ${summary.p99} ms`);
      const perSec = await publishes(client, "market.bid.bench", o.count * 4, o.size);
      rows.push({ variant: `stored publish, ${name}`, perSec });
      log(`auth stored publish ${name}: ${perSec}/s`);
      const t = performance.now();
      for (let i = 0; i < 20; i++) (auth ? await nats.auth!.connect({ agent: `c${i}` }) : await connect({ servers: nats.url })).close();
      rows.push({ variant: `connect, ${name}`, perSec: Math.round(20 / ((performance.now() - t) / 1000)) });
      if (auth) {
        const n = 50;
        let t0 = performance.now();
        for (let i = 0; i < n; i++) await nats.auth!.authority.agentCredentials(`m${i}`, new Date(Date.now() + 60_000));
        const native = (performance.now() - t0) / n;
        // the same JWT signed by the pure-JS nkeys key pairs (what @nats-io/jwt uses by default)
        const issuer = fromSeed(new TextEncoder().encode(await readSigner(nats)));
        const account = nats.auth!.authority.agentsAccountPublicKey;
        t0 = performance.now();
        for (let i = 0; i < n; i++) {
          const user = createUser();
          await encodeUser(`agent:p${i}`, user, account, { ...agentPermissions(`p${i}`) }, { signer: issuer, exp: Math.floor(Date.now() / 1000) + 60 });
        }
        const pure = (performance.now() - t0) / n;
        rows.push({ variant: "mint one agent's credentials, native Ed25519 (ms)", perSec: round(native) });
        rows.push({ variant: "mint one agent's credentials, pure-JS nkeys (ms)", perSec: round(pure) });
      }
    }
  } finally {
    for (const h of hooks.reverse()) await h().catch(() => {});
  }
  const base = (prefix: string) => rows.find((r) => r.variant.startsWith(prefix) && r.variant.endsWith("no authentication"));
  const table = rows.map((r) => {
    const b = r.variant.includes(",") ? base(r.variant.split(",")[0]!) : undefined;
    return [
      "auth",
      r.variant,
      r.summary?.p50 ?? "",
      r.summary?.p99 ?? "",
      r.perSec,
      b && b !== r ? (r.summary && b.summary ? ratio(r.summary.p50, b.summary.p50) ?? "" : ratio(r.perSec, b.perSec) ?? "") : "",
    ];
  });
  return {
    name: "auth",
    natsVersion: version,
    options: { count: o.count, warmup: o.warmup, payload_bytes: o.size },
    table: { headers: ["bench", "variant", "p50 ms", "p99 ms", "per s (or ms)", "vs no auth"], rows: table },
    variants: rows.map((r) => ({ ...r })),
    targets: [{ what: "authentication measured", verdict: verdictOf(rows.length >= 6), detail: "no target: the cost is reported" }],
    notes: ["requests: one at a time from one client to an in-process responder; stored publishes: 64 in flight to a memory stream; connect: 20 sequential connections (with auth, each mints a credential first)"],
  };
}

async function readSigner(nats: TestNats): Promise<string> {
  const { readFileSync } = await import("node:fs");
  return readFileSync(`${nats.auth!.authority.dir}/agent-signer.nk`, "utf8").trim();
}
