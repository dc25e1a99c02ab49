import { readFileSync } from "node:fs";
import { join } from "node:path";
import type Docker from "dockerode";

// CPU time and peak memory of a running container, sampled until it ends. The engine removes a
// container's cgroup the moment it exits, so what is known at the end is the last sample: a lower
// bound, at most one interval short. Two sources:
//
// - the cgroup's own files, when the engine runs on this machine and the container's first process
//   is visible in /proc (cgroup v1: cpuacct.usage, memory.max_usage_in_bytes; v2: cpu.stat
//   usage_usec, memory.peak or the highest memory.current seen) — cheap, read every 200 ms;
// - otherwise the engine's stats stream (one sample a second), as `docker stats` shows it.

export type Usage = { cpuMs?: number; peakMemoryBytes?: number };

export type UsageSampler = { stop(): Usage; current(): Usage };

const FILE_INTERVAL_MS = 200;

type Reader = () => Usage | undefined;

const readNumber = (file: string): number => Number(readFileSync(file, "utf8").trim());

/** Readers of the cgroup files of process `pid`, or undefined when they cannot be read here. */
export function cgroupReader(pid: number, root = "/sys/fs/cgroup"): Reader | undefined {
  let lines: string[];
  try {
    lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n");
  } catch {
    return undefined;
  }
  const v1 = (controller: string) => {
    for (const l of lines) {
      const [, ctrls, path] = l.split(":") as [string, string, string];
      if (ctrls.split(",").includes(controller)) return join(root, ctrls, path);
    }
    return undefined;
  };
  const cpuDir = v1("cpuacct");
  const memDir = v1("memory");
  let reader: Reader;
  if (cpuDir && memDir) {
    reader = () => ({ cpuMs: readNumber(join(cpuDir, "cpuacct.usage")) / 1e6, peakMemoryBytes: readNumber(join(memDir, "memory.max_usage_in_bytes")) });
  } else {
    const unified = lines.find((l) => l.startsWith("0::"));
    if (!unified) return undefined;
    const dir = join(root, unified.slice(3));
    let highest = 0;
    reader = () => {
      const usec = /usage_usec (\d+)/.exec(readFileSync(join(dir, "cpu.stat"), "utf8"));
      let peak: number;
      try {
        peak = readNumber(join(dir, "memory.peak"));
      } catch {
        peak = Math.max(highest, readNumber(join(dir, "memory.current")));
      }
      highest = peak;
      return { cpuMs: usec ? Number(usec[1]) / 1000 : undefined, peakMemoryBytes: peak };
    };
  }
  try {
    reader();
    return () => {
      try {
        return reader();
      } catch {
        return undefined; // the cgroup is gone: the container ended
      }
    };
  } catch {
    return undefined;
  }
}

type Stats = {
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
  memory_stats?: { max_usage?: number; usage?: number; stats?: { peak?: number } };
};

/** Samples container `id` (first process `pid`) until stop(). */
export function sampleUsage(docker: Docker, id: string, pid: number): UsageSampler {
  let last: Usage = {};
  const take = (u: Usage | undefined) => {
    if (!u) return;
    last = {
      cpuMs: Math.max(last.cpuMs ?? 0, u.cpuMs ?? 0) || last.cpuMs,
      peakMemoryBytes: Math.max(last.peakMemoryBytes ?? 0, u.peakMemoryBytes ?? 0) || last.peakMemoryBytes,
    };
  };
  const files = pid > 0 ? cgroupReader(pid) : undefined;
  if (files) {
    take(files());
    const timer = setInterval(() => take(files()), FILE_INTERVAL_MS);
    timer.unref();
    return {
      stop: () => {
        clearInterval(timer);
        take(files());
        return last;
      },
      current: () => last,
    };
  }
  let stream: NodeJS.ReadableStream & { destroy?: () => void } | undefined;
  let stopped = false;
  docker
    .getContainer(id)
    .stats({ stream: true })
    .then((s) => {
      stream = s as typeof stream;
      if (stopped) return stream!.destroy?.();
      let buf = "";
      s.on("data", (chunk: Buffer) => {
        buf += chunk.toString();
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const st = JSON.parse(line) as Stats;
            const cpu = st.cpu_stats?.cpu_usage?.total_usage;
            const mem = st.memory_stats?.max_usage ?? st.memory_stats?.stats?.peak ?? st.memory_stats?.usage;
            take({ cpuMs: cpu ? cpu / 1e6 : undefined, peakMemoryBytes: mem || undefined });
          } catch {
            // a partial or odd line: the next one will do
          }
        }
      });
      s.on("error", () => {});
    })
    .catch(() => {});
  return {
    stop: () => {
      stopped = true;
      stream?.destroy?.();
      return last;
    },
    current: () => last,
  };
}
