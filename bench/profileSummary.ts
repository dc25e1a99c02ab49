import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { ROOT } from "./lib.ts";

// Summarises a .cpuprofile (from `npm run bench -- … --profile DIR`): the functions with the most
// self time and the most inclusive time.
//   npx tsx bench/profileSummary.ts DIR/throughput-workers1/CPU.….cpuprofile [top=30]

type Node = { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] };
type Profile = { nodes: Node[]; samples: number[]; timeDeltas: number[] };

const [file, topArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: npx tsx bench/profileSummary.ts FILE.cpuprofile [top]\n");
  process.exit(64);
}
const top = Number(topArg ?? 30);
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;

const timeOf = new Map<number, number>();
profile.samples.forEach((id, i) => timeOf.set(id, (timeOf.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const total = [...timeOf.values()].reduce((a, b) => a + b, 0);
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const where = (u: string) => (u.startsWith("file://") ? relative(ROOT, new URL(u).pathname).replace(/^node_modules\//, "") : u);
const label = (n: Node) => `${n.callFrame.functionName || "(anonymous)"}  ${where(n.callFrame.url)}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""}`;

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
for (const [id, t] of timeOf) {
  const n = byId.get(id)!;
  self.set(label(n), (self.get(label(n)) ?? 0) + t);
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const l = label(byId.get(cur)!);
    if (seen.has(l)) continue;
    seen.add(l);
    inclusive.set(l, (inclusive.get(l) ?? 0) + t);
  }
}

const print = (title: string, m: Map<string, number>) => {
  process.stdout.write(`\n${title} (of ${(total / 1000).toFixed(0)} ms sampled)\n`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${((v / total) * 100).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}\n`);
  }
};
print("self time", self);
print("inclusive time", inclusive);
