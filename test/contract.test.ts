import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { canonicalJson } from "../host/canonicalJson.ts";
import { createEnvelope, envelopeHash, parseEnvelope, safeParseEnvelope, sealEnvelope, verifyEnvelope, type Envelope } from "../host/envelope.ts";
import { assertSubject, Subjects, validateSubject, type SubjectRejection } from "../contract/subjects.ts";

// The message contract: the envelope hash is a function of the envelope's JSON content alone
// (property tests, thousands of runs), v1 readers take v1.x envelopes whole, subjects follow the
// taxonomy.

const RUNS = 2000;
const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex");
const KNOWN = new Set(["version", "id", "type", "from", "to", "correlation_id", "causation_id", "trace_id", "span_id", "timestamp", "cost", "payload", "metadata", "envelope_hash"]);

// ------------------------------------------------------------------------------ arbitraries

const json = (maxDepth: number) => fc.oneof(fc.jsonValue({ maxDepth }), fc.jsonValue({ maxDepth, stringUnit: "binary" }));
const name = fc.stringMatching(/^[\x21-\x7e]{1,24}$/);
const hex = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`)).filter((s) => !/^0+$/.test(s));
const timestamp = fc
  .date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("2999-12-31T23:59:59Z"), noInvalidDate: true })
  .map((d) => d.toISOString());
const metadata = fc.dictionary(fc.string({ unit: "binary", maxLength: 12 }), json(2), { maxKeys: 6 });

const fieldsArb = fc.record({
  id: name,
  type: name,
  from: name,
  to: fc.option(name, { nil: null }),
  correlation_id: name,
  causation_id: fc.option(name, { nil: null }),
  trace_id: fc.option(hex(32), { nil: null }),
  span_id: fc.option(hex(16), { nil: null }),
  timestamp,
  cost: fc.option(fc.record({ credits: fc.double({ min: 0, max: 1e12, noNaN: true, noDefaultInfinity: true }) }), { nil: null }),
  payload: json(4),
  metadata,
});
const envelopeArb = fieldsArb.map((f) => createEnvelope(f));

/** Deterministic PRNG (mulberry32), so a shrunk counterexample replays the same shuffle. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The same value with every object's keys inserted in a random order, recursively. */
function shuffleKeys(value: unknown, random: () => number): unknown {
  if (Array.isArray(value)) return value.map((x) => shuffleKeys(x, random));
  if (value === null || typeof value !== "object") return value;
  const keys = Object.keys(value);
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [keys[i], keys[j]] = [keys[j]!, keys[i]!];
  }
  const out = {};
  // defineProperty: a generated key may be "__proto__", which plain assignment would swallow
  for (const k of keys) Object.defineProperty(out, k, { value: shuffleKeys((value as Record<string, unknown>)[k], random), enumerable: true, writable: true, configurable: true });
  return out;
}

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x));
const withoutHash = ({ envelope_hash: _h, ...rest }: Envelope) => rest;

type Path = (string | number)[];
function paths(value: unknown, prefix: Path = []): Path[] {
  const out: Path[] = prefix.length ? [prefix] : [];
  if (Array.isArray(value)) value.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
  else if (value !== null && typeof value === "object") for (const [k, x] of Object.entries(value)) out.push(...paths(x, [...prefix, k]));
  return out;
}

/** Applies one edit at `path` (or inside the container there) to a copy of `e`. */
function mutate(e: Envelope, path: Path, kind: "replace" | "add" | "remove", replacement: unknown, key: string): Record<string, unknown> {
  const copy = clone(e) as Record<string, unknown>;
  const parent = path.slice(0, -1).reduce<any>((o, k) => o[k], copy);
  const last = path[path.length - 1]!;
  const target = parent[last];
  if (kind === "add" && Array.isArray(target)) target.push(replacement);
  else if (kind === "add" && target !== null && typeof target === "object") Object.defineProperty(target, key, { value: replacement, enumerable: true, writable: true, configurable: true });
  else if (kind === "remove") Array.isArray(parent) ? parent.splice(Number(last), 1) : delete parent[last];
  else parent[last] = replacement;
  return copy;
}

// --------------------------------------------------------------------------------- hashing

describe("envelope hash (property tests)", () => {
  it(`is stable under key permutation at every depth (${RUNS} runs)`, () => {
    let reordered = 0;
    fc.assert(
      fc.property(envelopeArb, fc.integer(), (e, seed) => {
        const shuffled = shuffleKeys(e, rng(seed)) as Envelope;
        if (JSON.stringify(shuffled) !== JSON.stringify(e)) reordered++;
        assert.equal(envelopeHash(shuffled), e.envelope_hash);
        assert.deepEqual(verifyEnvelope(shuffled), { ok: true, hash: e.envelope_hash });
      }),
      { numRuns: RUNS },
    );
    // the shuffle must really reorder, or the property proves nothing
    assert.ok(reordered > RUNS * 0.9, `only ${reordered} of ${RUNS} envelopes were reordered`);
  });

  it(`is stable under JSON re-serialization and a v1 parse (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(envelopeArb, (e) => {
        const bytes = new TextEncoder().encode(JSON.stringify(e));
        assert.equal(envelopeHash(clone(e)), e.envelope_hash);
        assert.equal(verifyEnvelope(parseEnvelope(bytes)).ok, true);
        assert.equal(verifyEnvelope(JSON.parse(JSON.stringify(e, null, 2))).ok, true);
      }),
      { numRuns: RUNS },
    );
  });

  it(`changes when any field changes, nested payload and metadata included (${RUNS} runs)`, () => {
    const touched = new Set<string>();
    fc.assert(
      fc.property(envelopeArb, fc.nat(), fc.constantFrom("replace", "add", "remove") as fc.Arbitrary<"replace" | "add" | "remove">, json(2), fc.string({ maxLength: 8 }), (e, pick, kind, replacement, key) => {
        const all = paths(withoutHash(e));
        const path = all[pick % all.length]!;
        const mutated = mutate(e, path, kind, replacement, key);
        const before = canonicalJson(withoutHash(e));
        const { envelope_hash: carried, ...after } = mutated;
        // an edit that leaves the JSON identical (replacing 1 with 1) is not a change
        fc.pre(canonicalJson(after) !== before);
        touched.add(String(path[0]));
        assert.notEqual(envelopeHash(mutated), e.envelope_hash);
        assert.equal(carried, e.envelope_hash);
        const check = verifyEnvelope(mutated);
        assert.equal(check.ok, false);
        if (!check.ok) assert.equal(check.actual, e.envelope_hash);
      }),
      { numRuns: RUNS },
    );
    for (const field of ["version", "id", "type", "from", "to", "correlation_id", "causation_id", "timestamp", "payload", "metadata"]) {
      assert.ok(touched.has(field), `no run changed ${field}`);
    }
  });

  it(`has zero recomputation variance and no collisions across the generated set (${RUNS} runs)`, () => {
    const byHash = new Map<string, string>();
    fc.assert(
      fc.property(envelopeArb, fc.integer(), (e, seed) => {
        const random = rng(seed);
        const seen = new Set<string>();
        for (let i = 0; i < 10; i++) seen.add(envelopeHash(i % 2 ? shuffleKeys(e, random) as Envelope : clone(e)));
        assert.equal(seen.size, 1, "recomputing gave different hashes");
        const text = canonicalJson(withoutHash(e));
        const prior = byHash.get(e.envelope_hash);
        assert.ok(prior === undefined || prior === text, `collision: two different envelopes hash to ${e.envelope_hash}`);
        byHash.set(e.envelope_hash, text);
      }),
      { numRuns: RUNS },
    );
    assert.ok(byHash.size > RUNS * 0.99, `only ${byHash.size} distinct envelopes generated`);
  });

  it("matches a hash computed by hand from the canonical text", () => {
    const e = createEnvelope({
      id: "evt_1", type: "bid_placed", from: "agent_1", correlation_id: "run_1", timestamp: "2026-02-13T10:00:00.000Z",
      cost: { credits: 2.5 }, payload: { b: [1, 2.50, "€"], a: null }, metadata: { z: true, "é": 1e21 },
    });
    const text =
      '{"causation_id":null,"correlation_id":"run_1","cost":{"credits":2.5},"from":"agent_1","id":"evt_1",' +
      '"metadata":{"z":true,"é":1e+21},"payload":{"a":null,"b":[1,2.5,"€"]},"span_id":null,' +
      '"timestamp":"2026-02-13T10:00:00.000Z","to":null,"trace_id":null,"type":"bid_placed","version":"1.0"}';
    assert.equal(canonicalJson(withoutHash(e)), text);
    assert.equal(e.envelope_hash, sha256(text));
  });

  it("canonicalizes as RFC 8785 does (its number and key-order examples)", () => {
    assert.equal(canonicalJson({ numbers: [333333333.33333329, 1e30, 4.5, 2e-3, 0.000000000000000000000000001] }), '{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}');
    const keys = { "\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis" };
    // RFC 8785 §3.2.3: sorted by UTF-16 code units (so U+1F600 comes before U+FB33)
    const order = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\ud83d\ude00", "\ufb33"];
    assert.equal(canonicalJson(keys), `{${order.map((k) => `${JSON.stringify(k)}:${JSON.stringify(keys[k as keyof typeof keys])}`).join(",")}}`);
  });
});

describe("envelope values JSON cannot carry", () => {
  const base = { type: "t", from: "f" };
  const cases: [string, unknown, RegExp][] = [
    ["NaN", { n: NaN }, /payload\.n: NaN is not a JSON number/],
    ["Infinity", [Infinity], /payload\.0: Infinity is not a JSON number/],
    ["-Infinity", { a: { b: -Infinity } }, /payload\.a\.b: -Infinity/],
    ["undefined in an array", [1, undefined], /payload\.1: undefined is not JSON/],
    ["an array hole", [1, , 3], /payload\.1: an array hole/],
    ["a BigInt", { n: 10n }, /payload\.n: a BigInt/],
    ["a Date", { at: new Date(0) }, /payload\.at: a Date is not plain JSON data/],
    ["a Map", new Map([["a", 1]]), /payload: a Map is not plain JSON data/],
    ["a function", { f: () => 1 }, /payload\.f: a function is not JSON/],
    ["a symbol in an array", [Symbol("s")], /payload\.0: a symbol is not JSON/],
    ["a lone surrogate", { s: "\ud800" }, /payload\.s: a lone UTF-16 surrogate/],
  ];
  for (const [what, payload, message] of cases) {
    it(`refuses ${what} with its path instead of hashing something else`, () => {
      assert.throws(() => createEnvelope({ ...base, payload }), (err: Error & { code?: string }) => err.code === "HOST_ERR_ENVELOPE" && message.test(err.message));
      assert.throws(() => envelopeHash({ payload }), message);
    });
  }

  it("refuses a circular reference and metadata that is not JSON", () => {
    const loop: Record<string, unknown> = {};
    loop.self = loop;
    assert.throws(() => createEnvelope({ ...base, payload: loop }), /payload\.self: circular reference/);
    assert.throws(() => createEnvelope({ ...base, payload: 1, metadata: { k: NaN } }), /metadata\.k: NaN/);
  });

  it("treats an undefined property as absent, as JSON does", () => {
    const e = createEnvelope({ ...base, payload: { a: 1, b: undefined } });
    assert.equal(envelopeHash({ ...e, payload: { a: 1 } }), e.envelope_hash);
    assert.throws(() => createEnvelope({ ...base, payload: undefined }), /payload: must be a JSON value/);
  });
});

// ------------------------------------------------------------------------------- evolution

const extraKey = fc.stringMatching(/^x_[a-z0-9_]{1,10}$/);

describe("envelope evolution", () => {
  it(`a v1 reader parses v1.x envelopes, keeps unknown fields and metadata, and verifies them (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(envelopeArb, fc.integer({ min: 1, max: 99 }), fc.dictionary(extraKey, json(3), { minKeys: 1, maxKeys: 4 }), fc.dictionary(extraKey, json(2), { minKeys: 1, maxKeys: 4 }), (e, minor, extra, extraMeta) => {
        // a v1.x writer: more top-level fields, more metadata keys, sealed over all of them
        const newer = sealEnvelope({ ...withoutHash(e), ...extra, version: `1.${minor}`, metadata: { ...e.metadata, ...extraMeta } });
        const read = parseEnvelope(new TextEncoder().encode(JSON.stringify(newer)));
        // compared with their JSON round trip: -0 travels as 0
        for (const [k, x] of Object.entries(clone(extra))) assert.deepEqual(read[k], x, `lost top-level ${k}`);
        for (const [k, x] of Object.entries(clone(extraMeta))) assert.deepEqual(read.metadata[k], x, `lost metadata ${k}`);
        assert.equal(read.version, `1.${minor}`);
        assert.deepEqual(verifyEnvelope(read), { ok: true, hash: newer.envelope_hash });
        // forwarded by a v1 process (re-serialized) it still verifies; dropping what it does not know does not
        assert.equal(verifyEnvelope(JSON.parse(JSON.stringify(read))).ok, true);
        const dropped = Object.fromEntries(Object.entries(read).filter(([k]) => KNOWN.has(k)));
        assert.equal(verifyEnvelope(dropped).ok, false);
      }),
      { numRuns: RUNS },
    );
  });

  it("rejects another major version and names every bad field as path: message", () => {
    const e = createEnvelope({ type: "t", from: "f", payload: null });
    const r = safeParseEnvelope({ ...e, version: "2.0", trace_id: "ABC", timestamp: "yesterday", metadata: [], cost: { credits: -1 } });
    assert.equal(r.ok, false);
    if (r.ok) return;
    const text = r.issues.join("\n");
    for (const expected of [/^version: must be "1\.<minor>"/m, /^trace_id: must be 32 lowercase hex digits/m, /^timestamp: must be an RFC 3339/m, /^metadata: /m, /^cost\.credits: /m]) {
      assert.match(text, expected);
    }
    const { payload: _p, ...noPayload } = e;
    assert.deepEqual(safeParseEnvelope(noPayload).ok, false);
    assert.match(String((safeParseEnvelope(new TextEncoder().encode("{nope")) as { issues: string[] }).issues), /^\(root\): not UTF-8 JSON/);
    assert.throws(() => parseEnvelope({ ...e, id: "has space" }), (err: Error & { code?: string }) => err.code === "HOST_ERR_ENVELOPE" && /id: must be visible ASCII/.test(err.message));
  });

  it("keeps keys a schema library would strip (constructor, __proto__)", () => {
    const e = createEnvelope({ type: "t", from: "f", payload: 1, metadata: { constructor: "c" } });
    const text = JSON.stringify(e).replace(/^\{/, '{"__proto__":{"x":1},');
    const read = parseEnvelope(new TextEncoder().encode(text));
    assert.equal(verifyEnvelope(read).ok, false, "an extra field the writer did not hash must not verify");
    const sealed = sealEnvelope(JSON.parse(text));
    const again = parseEnvelope(new TextEncoder().encode(JSON.stringify(sealed)));
    assert.deepEqual(Object.getOwnPropertyDescriptor(again, "__proto__")?.value, { x: 1 });
    assert.equal(again.metadata.constructor, "c");
    assert.equal(verifyEnvelope(again).ok, true);
  });

  it("fills id, timestamp, version, correlation and nulls", () => {
    const e = createEnvelope({ type: "t", from: "f", payload: { a: 1 } });
    assert.match(e.id, /^[A-Za-z0-9]{22}$/);
    assert.equal(e.correlation_id, e.id);
    assert.equal(e.version, "1.0");
    assert.ok(Math.abs(Date.parse(e.timestamp) - Date.now()) < 5000);
    assert.deepEqual([e.to, e.causation_id, e.trace_id, e.span_id, e.cost, e.metadata], [null, null, null, null, null, {}]);
    assert.notEqual(createEnvelope({ type: "t", from: "f", payload: { a: 1 } }).id, e.id);
    assert.equal(createEnvelope({ type: "t", from: "f", payload: 1, timestamp: new Date(0) }).timestamp, "1970-01-01T00:00:00.000Z");
  });
});

// -------------------------------------------------------------------------------- subjects

describe("subjects", () => {
  const valid: [string, object][] = [
    ["agent.genesis_001.cognitive_cycle_started", { domain: "agent", entity: "genesis_001", action: "cognitive_cycle_started" }],
    ["agent.genesis_001.bid_placed", { domain: "agent", entity: "genesis_001", action: "bid_placed" }],
    ["market.bid_accepted", { domain: "market", action: "bid_accepted" }],
    ["market.price_update", { domain: "market", action: "price_update" }],
    ["system.resource_allocated", { domain: "system", action: "resource_allocated" }],
    ["llm.invoke", { domain: "llm", action: "invoke" }],
    ["mcp.request.web_search", { domain: "mcp", entity: "request", action: "web_search" }],
    ["economic.balance.agent_1", { domain: "economic", entity: "balance", action: "agent_1" }],
    ["agent.genesis_001.bid_placed.priority_high", { domain: "agent", entity: "genesis_001", action: "bid_placed", qualifier: "priority_high" }],
  ];
  for (const [subject, parts] of valid) {
    it(`accepts ${subject}`, () => {
      assert.deepEqual(validateSubject(subject), { ok: true, ...parts });
      assert.deepEqual(assertSubject(subject), parts);
    });
  }

  it("accepts the restricted domains only for callers allowed them", () => {
    assert.deepEqual(validateSubject("trace.agent.genesis_001.span_created", { allow: ["trace"] }), { ok: true, domain: "trace", entity: "agent", action: "genesis_001", qualifier: "span_created" });
    assert.equal(validateSubject("admin.reward.grant", { allow: ["admin"] }).ok, true);
    assert.equal((validateSubject("admin.reward.grant", { allow: ["trace"] }) as { reason?: string }).reason, "reserved");
  });

  it("accepts filters only when wildcards are allowed", () => {
    for (const f of ["mcp.request.>", "agent.*.bid", "*.*.bench_001", "market.>"]) {
      assert.equal(validateSubject(f, { wildcards: true }).ok, true, f);
      assert.equal((validateSubject(f) as { reason?: string }).reason, "wildcard_not_allowed", f);
    }
  });

  const rejected: [string, SubjectRejection, object?][] = [
    ["market", "too_few_segments"],
    [">", "too_few_segments", { wildcards: true }],
    ["foo.bar.baz", "unknown_domain"],
    ["Market.bid.a", "unknown_domain"],
    ["", "empty_token"],
    ["market..bid", "empty_token"],
    [".market.bid", "empty_token"],
    ["market.bid.", "empty_token"],
    ["market.bid.agent 1", "invalid_characters"],
    ["market.bid.agent\t1", "invalid_characters"],
    ["market.bid.a*b", "invalid_characters"],
    ["market.bid.a>", "invalid_characters"],
    ["market.bid.ä", "invalid_characters"],
    ["market.bid.*", "wildcard_not_allowed"],
    ["market.>", "wildcard_not_allowed"],
    ["market.>.bid", "wildcard_not_allowed", { wildcards: true }],
    ["_INBOX.abc123", "reserved"],
    ["$JS.API.STREAM.INFO.AUDIT", "reserved"],
    ["$SRV.PING", "reserved"],
    ["$KV.balances.agent_1", "reserved"],
    ["trace.agent.genesis_001.span_completed", "reserved"],
    ["admin.reward.grant", "reserved"],
  ];
  for (const [subject, reason, opts] of rejected) {
    it(`rejects ${JSON.stringify(subject)}${opts ? ` ${JSON.stringify(opts)}` : ""}: ${reason}`, () => {
      const r = validateSubject(subject, opts);
      assert.equal(r.ok, false);
      if (!r.ok) {
        assert.equal(r.reason, reason, r.message);
        assert.ok(r.message.length > 10);
      }
      assert.throws(() => assertSubject(subject, opts), (err: Error & { code?: string }) => err.code === "HOST_ERR_INVALID_SUBJECT" && err.message.includes(reason));
    });
  }

  it("builds the seeds' subjects, each valid, and refuses bad tokens", () => {
    const built = [
      [Subjects.agentEvent("genesis_001", "cognitive_cycle_started"), "agent.genesis_001.cognitive_cycle_started"],
      [Subjects.marketBid("agent_1"), "market.bid.agent_1"],
      [Subjects.marketPriceUpdate(), "market.price_update"],
      [Subjects.economicBalance("agent_1"), "economic.balance.agent_1"],
      [Subjects.llmInvoke("agent_1"), "llm.invoke.agent_1"],
      [Subjects.mcpRequest("web_search"), "mcp.request.web_search"],
      [Subjects.mcpRequest("web_search", "agent_1"), "mcp.request.web_search.agent_1"],
      [Subjects.marketPrices(), "market.prices"],
      [Subjects.adminAgentTerminate(), "admin.agent.terminate"],
      [Subjects.traceSpanStarted("agent", "genesis_001"), "trace.agent.genesis_001.span_started"],
      [Subjects.traceSpanCompleted("market", "auction"), "trace.market.auction.span_completed"],
      [Subjects.adminRewardGrant(), "admin.reward.grant"],
    ];
    for (const [got, want] of built) {
      assert.equal(got, want);
      assert.equal(validateSubject(got!, { allow: ["trace", "admin"] }).ok, true, got);
    }
    for (const bad of ["", "a.b", "a b", "*", ">", "agent\n1"]) {
      assert.throws(() => Subjects.marketBid(bad), (err: Error & { code?: string }) => err.code === "HOST_ERR_INVALID_SUBJECT", JSON.stringify(bad));
    }
    assert.throws(() => Subjects.traceSpanStarted("nope" as "agent", "x"), /unknown_domain/);
    assert.throws(() => Subjects.mcpRequest("web_search", "a.b"), /agent id "a\.b"/);
  });

  it(`accepts every subject made of valid tokens and refuses one bad character anywhere (${RUNS} runs)`, () => {
    const token = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/);
    const domain = fc.constantFrom("agent", "market", "system", "mcp", "economic", "llm");
    fc.assert(
      fc.property(domain, fc.array(token, { minLength: 1, maxLength: 5 }), fc.nat(), fc.constantFrom(" ", "\t", "\n", "*", ">", "/", "ü", "\u0000"), (d, rest, at, ch) => {
        const tokens = [d, ...rest];
        assert.equal(validateSubject(tokens.join(".")).ok, true);
        const i = 1 + (at % rest.length);
        const broken = [...tokens];
        broken[i] = broken[i] + ch;
        const r = validateSubject(broken.join("."));
        assert.equal(r.ok, false);
        if (!r.ok) assert.equal(r.reason, "invalid_characters");
      }),
      { numRuns: RUNS },
    );
  });
});
