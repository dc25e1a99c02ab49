import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Docker from "dockerode";

// A private Docker engine for one test suite, started as root the way /work/shared/RECIPES.md
// measured it: its own data and exec roots under /tmp, its own socket, no bridge network and no
// iptables rules (containers run with --network none; nothing here may create a network on a
// private range), stopped and deleted after the suite. Nothing talks to an engine the machine
// already runs. When `dockerd` is missing it installs Debian's `docker.io` with apt-get (as root),
// as ensureNatsServer does for nats-server, or fails saying exactly what to do.

export type TestDocker = {
  socketPath: string;
  docker: Docker;
  /** The engine's log so far (for failure dumps). */
  output(): string;
  stop(): Promise<void>;
};

type Hooks = { after: (fn: () => Promise<void>) => void };

/** node:test's `skip` for suites on a private engine: `dockerd` runs only as root. */
export const needsRoot: false | string = process.getuid?.() === 0 ? false : "needs root: the suite starts its own dockerd";

const WELL_KNOWN = ["/usr/sbin/dockerd", "/usr/bin/dockerd", "/usr/local/bin/dockerd"];

export const DOCKERD_HINT =
  "dockerd was not found. Install Debian's engine with `sudo apt-get install -y docker.io` " +
  "(the tests start their own engine from it, as root; /usr/local/bin/docker alone is only the client).";

function findDockerd(): string | undefined {
  for (const c of [...(process.env.PATH ?? "").split(delimiter).filter(Boolean).map((d) => join(d, "dockerd")), ...WELL_KNOWN]) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // the next one
    }
  }
  return undefined;
}

/** dockerd's path; installs docker.io with apt-get when running as root and it is missing. */
export function ensureDockerd(log: (msg: string) => void = (m) => console.error(m)): string {
  const found = findDockerd();
  if (found) return found;
  if (process.getuid?.() === 0 && findOn(["/usr/bin/apt-get"])) {
    log("dockerd not found; installing Debian's docker.io with apt-get (about a minute)");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    // the package must not start the machine's own engine (it would make a bridge on a private
    // range): policy-rc.d exiting 101 tells the maintainer scripts to start no service
    const policy = "/usr/sbin/policy-rc.d";
    const addedPolicy = !existsSync(policy);
    if (addedPolicy) writeFileSync(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
    let r = spawnSync("apt-get", ["install", "-y", "-q", "docker.io"], { stdio: "inherit", env });
    if (r.status !== 0) {
      spawnSync("apt-get", ["update", "-q"], { stdio: "inherit", env });
      r = spawnSync("apt-get", ["install", "-y", "-q", "docker.io"], { stdio: "inherit", env });
    }
    if (addedPolicy) rmSync(policy, { force: true });
    const after = findDockerd();
    if (after) return after;
  }
  throw new Error(DOCKERD_HINT);
}

const findOn = (paths: string[]) => paths.some((p) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
});

/**
 * Starts a private engine and waits until it answers `ping` (about 3 s here). Must run as root.
 * The folder is short (`/tmp/sd-XXXXXX`): the engine's exec root holds unix sockets, whose paths
 * the kernel limits to 108 bytes.
 */
export async function startTestDocker(t: Hooks): Promise<TestDocker> {
  if (process.getuid?.() !== 0) throw new Error("startTestDocker needs root: dockerd runs as root (no rootless engine here)");
  const bin = ensureDockerd();
  const dir = mkdtempSync("/tmp/sd-");
  const socketPath = join(dir, "docker.sock");
  const args = [
    "--data-root", join(dir, "data"), "--exec-root", join(dir, "exec"), "-H", `unix://${socketPath}`,
    "--bridge=none", "--iptables=false", "--pidfile", join(dir, "docker.pid"),
  ];
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const keep = (b: Buffer) => {
    out += b.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const docker = new Docker({ socketPath });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      const left = await docker.listContainers({ all: true });
      await Promise.all(left.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
    } catch {
      // the engine is gone already
    }
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const late = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(late);
    }
    // dockerd leaves its overlay mounts and netns files behind only when killed; unmount what is left
    const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(`${dir}/`));
    for (const m of mounts.sort().reverse()) spawnSync("umount", ["-l", m]);
    rmSync(dir, { recursive: true, force: true });
  };
  t.after(stop);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`dockerd exited during start-up (${child.exitCode ?? child.signalCode}):\n${out.slice(-4000)}`);
    try {
      await docker.ping();
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`dockerd did not answer on ${socketPath} within 30 s:\n${out.slice(-4000)}`);
      }
      await sleep(100);
    }
  }
  return { socketPath, docker, output: () => out, stop };
}
