import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./helpers/host.ts";

// Every installed package accepts the Node version running the tests: what npm's EBADENGINE
// warning checks at install, as a failure. package.json says "node": ">=20", so CI on Node 20 keeps
// the whole tree honest. (semver is not in the tree; the few range forms package.json files use
// are parsed below, and any other form fails loudly rather than passing.)

type Version = [number, number, number];
type Comparator = { op: ">=" | "<" | ">" | "<=" | "="; v: Version };

function parseVersion(s: string): Version {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(s);
  if (!m) throw new Error(`not a version: ${s}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

function compare(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** One comparator or x-range (`>=18`, `>= 22.x`, `^18.19.0`, `~1.2.3`, `6.*`, `1.2.3`) → bounds. */
function comparators(token: string, range: string): Comparator[] {
  const m = /^(\^|~|>=|<=|>|<|=)?v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-[0-9A-Za-z.-]+)?$/.exec(token);
  if (!m) throw new Error(`engines.node range ${JSON.stringify(range)}: cannot read ${JSON.stringify(token)}`);
  const op = m[1] ?? "";
  const parts = [m[2], m[3], m[4]].map((p) => (p === undefined || /^[xX*]$/.test(p) ? undefined : Number(p)));
  const [maj, min, pat] = parts;
  if (maj === undefined) return []; // "*": any version
  const floor: Version = [maj, min ?? 0, pat ?? 0];
  // the first version past a partial one: 6 → 7.0.0, 6.1 → 6.2.0
  const next: Version = min === undefined ? [maj + 1, 0, 0] : pat === undefined ? [maj, min + 1, 0] : [maj, min, pat + 1];
  const partial = min === undefined || pat === undefined;
  switch (op) {
    case ">=":
      return [{ op: ">=", v: floor }];
    case ">":
      return [partial ? { op: ">=", v: next } : { op: ">", v: floor }];
    case "<":
      return [{ op: "<", v: floor }];
    case "<=":
      return [partial ? { op: "<", v: next } : { op: "<=", v: floor }];
    case "^": {
      const ceiling: Version = maj > 0 || min === undefined ? [maj + 1, 0, 0] : min > 0 || pat === undefined ? [0, min + 1, 0] : [0, 0, pat + 1];
      return [{ op: ">=", v: floor }, { op: "<", v: ceiling }];
    }
    case "~":
      return [{ op: ">=", v: floor }, { op: "<", v: min === undefined ? [maj + 1, 0, 0] : [maj, min + 1, 0] }];
    default:
      return partial ? [{ op: ">=", v: floor }, { op: "<", v: next }] : [{ op: "=", v: floor }];
  }
}

/** Does `version` satisfy an npm range (`A || B`, each a space-separated AND of comparators)? */
export function satisfies(version: string, range: string): boolean {
  const v = parseVersion(version);
  if (/\s-\s/.test(range)) throw new Error(`engines.node range ${JSON.stringify(range)}: hyphen ranges are not read here`);
  return range.split("||").some((alternative) => {
    const tokens = alternative.trim().replace(/(>=|<=|>|<|=|\^|~)\s+/g, "$1").split(/\s+/).filter(Boolean);
    return tokens.flatMap((t) => comparators(t, range)).every(({ op, v: bound }) => {
      const c = compare(v, bound);
      return op === ">=" ? c >= 0 : op === ">" ? c > 0 : op === "<" ? c < 0 : op === "<=" ? c <= 0 : c === 0;
    });
  });
}

test("engines - the range reader", () => {
  const cases: [string, string, boolean][] = [
    ["20.20.2", ">= 22.x", false],
    ["22.0.0", ">= 22.x", true],
    ["20.20.2", ">=20", true],
    ["20.20.2", ">= 18.0.0", true],
    ["20.20.2", "^18.19.0 || >=20.6.0", true],
    ["20.5.0", "^18.19.0 || >=20.6.0", false],
    ["18.20.0", "^18.19.0 || >=20.6.0", true],
    ["20.20.2", "^8.16.0 || ^10.6.0 || >=11.0.0", true],
    ["10.1.0", "^8.16.0 || ^10.6.0 || >=11.0.0", false],
    ["20.20.2", "6.* || 8.* || >= 10.*", true],
    ["9.0.0", "6.* || 8.* || >= 10.*", false],
    ["20.20.2", ">=9.3.0 || >=8.10.0 <9.0.0", true],
    ["8.9.0", ">=9.3.0 || >=8.10.0 <9.0.0", false],
    ["20.20.2", "<20", false],
    ["20.20.2", "~20.19.0", false],
    ["20.20.2", "*", true],
  ];
  for (const [version, range, expected] of cases) assert.equal(satisfies(version, range), expected, `${version} in ${range}`);
  assert.throws(() => satisfies("20.0.0", "node20"), /cannot read/);
});

test("engines - every installed package accepts this Node", () => {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { version?: string; engines?: Record<string, string> | string[] }> };
  const refused: string[] = [];
  let checked = 0;
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === "") continue; // the project itself
    const manifest = join(ROOT, path, "package.json");
    if (!existsSync(manifest)) continue; // another platform's optional package, not installed
    const installed = JSON.parse(readFileSync(manifest, "utf8")) as { version?: string; engines?: { node?: string } };
    // what the lock recorded and what is on disk: npm warns on either
    const ranges = new Set([Array.isArray(entry.engines) ? undefined : entry.engines?.node, installed.engines?.node].filter((r): r is string => typeof r === "string"));
    for (const range of ranges) {
      checked++;
      if (!satisfies(process.versions.node, range)) refused.push(`${path.replace(/^node_modules\//, "").replaceAll("/node_modules/", " > ")}@${installed.version}: engines.node ${JSON.stringify(range)}`);
    }
  }
  assert.ok(checked > 100, `only ${checked} engines ranges found: is package-lock.json v2+?`);
  assert.deepEqual(refused, [], `packages whose engines exclude Node ${process.versions.node} (pin an older one with "overrides" in package.json)`);
});
