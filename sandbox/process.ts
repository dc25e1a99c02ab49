import { spawn, type ChildProcess } from "node:child_process";
import { constants } from "node:os";
import { resolve } from "node:path";
import { SandboxError, SandboxErrorCode } from "./errors.ts";
import { outputSink } from "./output.ts";
import { natsTarget } from "./relay.ts";
import { checkWorkspace } from "./workspace.ts";
import { labelsOf, type Finished, type Found, type LaunchSpec, type Probe, type Sandbox, type SandboxDriver } from "./types.ts";

// The process driver: the agent runs as a plain child process of this one, for machines without
// Docker (development). NOTHING IS ENFORCED: no memory, CPU or process limit, the agent can read
// and write whatever this process's user can, and reach any address. `isolated` is false, and the
// code that chooses it (sandbox/select.ts) says so loudly. Same launcher and SDK as the image
// (agent/launcher.mjs, without the relay: SYNTROPISM_NATS_URL points the SDK at the server itself),
// with the workspace as the working directory and SYNTROPISM_WORKSPACE.
//
// Each agent runs in a process group of its own, so that stop() ends whatever it started too.
// Children die with this process only when they notice; after a restart `running()` finds nothing.

const LAUNCHER = resolve(import.meta.dirname, "..", "agent", "launcher.mjs");

export class ProcessDriver implements SandboxDriver {
  readonly name = "process" as const;
  readonly isolated = false;
  readonly #live = new Map<string, { labels: Record<string, string>; sandbox: Sandbox }>();

  async probe(): Promise<Probe> {
    return { ok: true };
  }

  async launch(spec: LaunchSpec): Promise<Sandbox> {
    checkWorkspace(spec.workspace);
    natsTarget(spec.natsUrl);
    const env: Record<string, string | undefined> = { ...process.env, SYNTROPISM_WORKSPACE: resolve(spec.workspace), SYNTROPISM_NATS_URL: spec.natsUrl };
    delete env.SYNTROPISM_NATS_SOCKET;
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, [LAUNCHER], { cwd: spec.workspace, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    await new Promise<void>((ok, fail) => {
      child.once("spawn", ok);
      child.once("error", (err) => fail(new SandboxError(SandboxErrorCode.Launch, `could not start node: ${err.message}`, { cause: err })));
    });
    const id = `process-${child.pid}`;
    const sandbox = processSandbox(id, child, spec.onOutput);
    this.#live.set(id, { labels: labelsOf(spec), sandbox });
    void sandbox.wait().then(() => this.#live.delete(id));
    return sandbox;
  }

  /** Agents this driver started and that still run (none survive a restart of this process). */
  async running(labels: Record<string, string>): Promise<Found[]> {
    return [...this.#live.entries()]
      .filter(([, e]) => Object.entries(labels).every(([k, v]) => e.labels[k] === v))
      .map(([id, e]) => ({ id, labels: e.labels, state: "running" as const, attach: () => e.sandbox }));
  }

  async close(): Promise<void> {}
}

function processSandbox(id: string, child: ChildProcess, onOutput: LaunchSpec["onOutput"]): Sandbox {
  const sink = outputSink(onOutput);
  child.stdout!.on("data", (b: Buffer) => sink.write(b, "stdout"));
  child.stderr!.on("data", (b: Buffer) => sink.write(b, "stderr"));
  let stopping = false;
  const finished = new Promise<Finished>((done) => {
    child.once("close", (code, signal) => {
      sink.end();
      group("SIGKILL"); // what the agent left running ends with it, as in a container
      const exitCode = code ?? 128 + (signal ? constants.signals[signal] : 0);
      done({ exitCode, oomKilled: false, reason: stopping ? "stopped" : "exit", outputTail: sink.tail() });
    });
  });
  function group(sig: NodeJS.Signals) {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // gone already
    }
  }
  return {
    id,
    wait: () => finished,
    async stop(graceMs: number) {
      stopping = true;
      group("SIGTERM");
      const timer = setTimeout(() => group("SIGKILL"), Math.max(0, graceMs));
      await finished;
      clearTimeout(timer);
    },
  };
}
