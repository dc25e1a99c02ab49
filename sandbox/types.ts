// The sandbox layer's whole contract: the orchestrator launches an agent's execution through a
// SandboxDriver and gets a Sandbox back to wait for or stop. Drivers: `docker` (sandbox/docker.ts,
// isolated: limits enforced, no network but NATS), `process` (sandbox/process.ts, a plain child
// process for machines without Docker: nothing enforced). A Kubernetes driver would be a Job per
// execution behind the same interface (docs/agents.md).

/** What the agent paid for, enforced by an isolated driver. */
export type Limits = {
  /** Memory and swap together; past it the kernel's OOM killer ends the agent. */
  memoryMiB: number;
  /** CPU, in thousandths of a core (500 = half a core), enforced as a CFS quota. */
  cpuMillicores: number;
  /** Processes and threads together (node itself uses about 10). */
  pids: number;
};

export type OutputStream = "stdout" | "stderr";

export type LaunchSpec = {
  executionId: string;
  agentId: string;
  windowId: number;
  correlationId: string;
  /**
   * Host folder, mounted read-write at /workspace; the caller has written env.json (and the
   * credentials file it names) into it. An isolated driver hands it to the sandbox's user (65534).
   */
  workspace: string;
  limits: Limits;
  /** The host-side NATS URL (nats://host:port) the relay forwards to. */
  natsUrl: string;
  /** Extra labels to find the sandbox by (`running()`); syntropism.execution, .agent, .window are set. */
  labels?: Record<string, string>;
  /** Each line the agent prints, as it prints it. */
  onOutput?: (line: string, stream: OutputStream) => void;
};

export type FinishReason = "exit" | "oom" | "stopped" | "error";

export type Finished = {
  /** The agent's exit status; 128 + signal when a signal ended it (137: SIGKILL, the OOM killer's). */
  exitCode: number;
  oomKilled: boolean;
  /** `oom` wins over `stopped`; `error`: the driver lost the sandbox (engine gone) — see `error`. */
  reason: FinishReason;
  /** CPU time used, from the last sample before the end (a lower bound; docs/agents.md). */
  cpuMs?: number;
  /** Highest memory use seen, bytes. */
  peakMemoryBytes?: number;
  /** The last 64 KiB of stdout and stderr together, as lines. */
  outputTail: string;
  error?: string;
};

export type Sandbox = {
  readonly id: string;
  /** Resolves once, when the agent has ended and the driver has cleaned up after it. */
  wait(): Promise<Finished>;
  /** SIGTERM now, SIGKILL after `graceMs` if it is still running; resolves when it has ended. */
  stop(graceMs: number): Promise<void>;
};

export type Found = {
  id: string;
  labels: Record<string, string>;
  /** `exited`: it ended while nobody waited; attach().wait() gives its end at once. */
  state: "running" | "exited";
  /** Takes it over: wait() and stop() as if launched here; `onOutput` gets the lines from now on. */
  attach(onOutput?: LaunchSpec["onOutput"]): Sandbox;
};

export type Probe = { ok: true } | { ok: false; reason: string };

export interface SandboxDriver {
  readonly name: "docker" | "process";
  /** Whether limits, filesystem and network are enforced (false: a plain process, trust it). */
  readonly isolated: boolean;
  /** Can it launch now? If not, why, in one line. */
  probe(): Promise<Probe>;
  /** Rejects with a SandboxError (its code says why) when nothing was started. */
  launch(spec: LaunchSpec): Promise<Sandbox>;
  /** Sandboxes still running whose labels include all of `labels` (after a restart of the caller). */
  running(labels: Record<string, string>): Promise<Found[]>;
  /** Releases what the driver holds (relay sockets, connections); running sandboxes go on. */
  close(): Promise<void>;
}

/** The labels every sandbox carries. */
export const LABEL = {
  execution: "syntropism.execution",
  agent: "syntropism.agent",
  window: "syntropism.window",
  correlation: "syntropism.correlation",
} as const;

export function labelsOf(spec: LaunchSpec): Record<string, string> {
  return {
    ...spec.labels,
    [LABEL.execution]: spec.executionId,
    [LABEL.agent]: spec.agentId,
    [LABEL.window]: String(spec.windowId),
    [LABEL.correlation]: spec.correlationId,
  };
}
