import { readFileSync } from "node:fs";

// CPU time of processes from /proc (Linux): how much CPU a consumer spends per message is steadier
// than its rate on a small machine where the server, the publisher and the consumer share cores.
// Elsewhere these return undefined and the figures are left out.

const TICK_MS = 10; // USER_HZ is 100 on every Linux Node supports

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** `pid` and every process below it. */
export function descendants(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i]!;
    for (const tid of (read(`/proc/${p}/task/${p}/children`) ?? "").split(/\s+/).filter(Boolean)) out.push(Number(tid));
  }
  return out;
}

/** User + system CPU milliseconds used so far by `pids` (each process on its own, all threads). */
export function cpuMs(pids: number[]): number | undefined {
  let total = 0;
  let seen = false;
  for (const pid of pids) {
    const stat = read(`/proc/${pid}/stat`);
    if (!stat) continue;
    // fields after the command name, which is in parentheses and may contain spaces
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    total += (Number(fields[11]) + Number(fields[12])) * TICK_MS; // utime, stime (fields 14, 15)
    seen = true;
  }
  return seen ? total : undefined;
}
