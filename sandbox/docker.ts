import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { PassThrough } from "node:stream";
import Docker from "dockerode";
import { SandboxError, SandboxErrorCode } from "./errors.ts";
import { engineError } from "./image.ts";
import { outputSink, type OutputSink } from "./output.ts";
import { startRelay, type NatsRelay } from "./relay.ts";
import { labelsOf, type Finished, type Found, type LaunchSpec, type Limits, type Probe, type Sandbox, type SandboxDriver } from "./types.ts";
import { sampleUsage, type UsageSampler } from "./usage.ts";
import { checkWorkspace, chownTree } from "./workspace.ts";

// The Docker driver: each execution is a container of the agent image (sandbox/image.ts) under the
// limits the agent paid for, with no network but the NATS relay (sandbox/relay.ts). Every flag is
// there to stop something; docs/agents.md has the table. The container is not auto-removed: its
// exit state (status, OOM-killed) is read after it ends, then it is removed.

/** The sandbox's user: nobody/nogroup, which owns nothing on the host but the workspace. */
export const SANDBOX_UID = 65534;
const TMPFS = `rw,nosuid,nodev,noexec,size=16m,uid=${SANDBOX_UID},gid=${SANDBOX_UID}`;
/** Engine-side logs of one container: bounded, whatever the agent prints. */
const LOG_CONFIG = { Type: "json-file", Config: { "max-size": "1m", "max-file": "1" } };

export type DockerDriverOptions = {
  /** The image tag to run (`ensureImage()`'s). */
  image: string;
  /** An engine client; else one for `dockerHost`. */
  docker?: Docker;
  /** `unix:///path` or `tcp://host:port` (DOCKER_HOST); default /var/run/docker.sock. */
  dockerHost?: string;
  /**
   * Where the relay's sockets live, one folder per NATS URL (bind-mounted at /run/nats). Stable
   * across restarts by default, so that containers found again by `running()` reach the new relay.
   */
  relayRoot?: string;
};

/** A client for DOCKER_HOST (unix:// or tcp://), else the default socket. */
export function dockerClient(dockerHost?: string): Docker {
  if (!dockerHost) return new Docker({ socketPath: "/var/run/docker.sock" });
  if (dockerHost.startsWith("unix://")) return new Docker({ socketPath: dockerHost.slice("unix://".length) });
  const u = new URL(dockerHost.replace(/^tcp:/, "http:"));
  return new Docker({ host: u.hostname, port: Number(u.port || 2375) });
}

export function validateLimits(l: Limits): void {
  const bad: string[] = [];
  if (!Number.isInteger(l.memoryMiB) || l.memoryMiB < 32) bad.push(`memoryMiB ${l.memoryMiB} (an integer ≥ 32: node alone needs ~30 MiB)`);
  if (!Number.isInteger(l.cpuMillicores) || l.cpuMillicores < 10) bad.push(`cpuMillicores ${l.cpuMillicores} (an integer ≥ 10)`);
  if (!Number.isInteger(l.pids) || l.pids < 16) bad.push(`pids ${l.pids} (an integer ≥ 16: node's own threads count)`);
  if (bad.length) throw new SandboxError(SandboxErrorCode.InvalidSpec, `limits out of range: ${bad.join("; ")}`);
}

const isEngineDown = (err: unknown) => {
  const e = err as { code?: string; statusCode?: number };
  return ["ECONNREFUSED", "ENOENT", "ECONNRESET", "EPIPE", "EACCES", "ETIMEDOUT", "EHOSTUNREACH"].includes(e.code ?? "") || (e.statusCode ?? 0) >= 502;
};

/** Docker container names: [a-zA-Z0-9][a-zA-Z0-9_.-]*; the execution id made to fit. */
export const containerName = (executionId: string) => `syntropism-${executionId.replace(/[^a-zA-Z0-9_.-]/g, "_")}`.slice(0, 200);

export class DockerDriver implements SandboxDriver {
  readonly name = "docker" as const;
  readonly isolated = true;
  readonly docker: Docker;
  readonly image: string;
  readonly #relayRoot: string;
  readonly #relays = new Map<string, Promise<NatsRelay>>();
  /** Where the engine is, for messages. */
  readonly where: string;

  constructor(opts: DockerDriverOptions) {
    this.docker = opts.docker ?? dockerClient(opts.dockerHost);
    const m = this.docker.modem as { socketPath?: string; host?: string; port?: number };
    this.where = m.socketPath ? String(m.socketPath) : `${m.host}:${m.port}`;
    this.image = opts.image;
    this.#relayRoot = opts.relayRoot ?? join(tmpdir(), `syntropism-relay-${process.getuid?.() ?? 0}`);
  }

  async probe(): Promise<Probe> {
    const where = this.where;
    try {
      await this.docker.ping();
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const hint = e.code === "ENOENT" ? "no engine socket there: start dockerd or set DOCKER_HOST" : e.code === "ECONNREFUSED" ? "nothing listens there: start dockerd or set DOCKER_HOST" : "the engine is not answering (restarting?)";
      return { ok: false, reason: `Docker engine at ${where}: ${e.code ?? e.message ?? String(err)} — ${hint}` };
    }
    try {
      await this.docker.getImage(this.image).inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return { ok: false, reason: `Docker engine at ${where} has no image ${this.image}: run \`npm run agents -- image build\`` };
      return { ok: false, reason: `Docker engine at ${where}: ${(err as Error).message}` };
    }
    return { ok: true };
  }

  #relay(natsUrl: string): Promise<NatsRelay> {
    let r = this.#relays.get(natsUrl);
    if (!r) {
      const dir = join(this.#relayRoot, createHash("sha256").update(natsUrl).digest("hex").slice(0, 12));
      r = startRelay(dir, natsUrl);
      r.catch(() => this.#relays.delete(natsUrl));
      this.#relays.set(natsUrl, r);
    }
    return r;
  }

  async launch(spec: LaunchSpec): Promise<Sandbox> {
    validateLimits(spec.limits);
    checkWorkspace(spec.workspace);
    const relay = await this.#relay(spec.natsUrl);
    chownTree(spec.workspace, SANDBOX_UID);
    const mib = spec.limits.memoryMiB * 1024 * 1024;
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer({
        name: containerName(spec.executionId),
        Image: this.image,
        User: `${SANDBOX_UID}:${SANDBOX_UID}`,
        Labels: labelsOf(spec),
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        OpenStdin: false,
        HostConfig: {
          NetworkMode: "none",
          ReadonlyRootfs: true,
          Tmpfs: { "/tmp": TMPFS },
          CapDrop: ["ALL"],
          SecurityOpt: ["no-new-privileges"],
          Memory: mib,
          MemorySwap: mib,
          NanoCpus: spec.limits.cpuMillicores * 1_000_000,
          PidsLimit: spec.limits.pids,
          Binds: [`${resolve(spec.workspace)}:/workspace:rw`, `${relay.dir}:/run/nats:ro`],
          LogConfig: LOG_CONFIG,
          AutoRemove: false,
        },
      });
    } catch (err) {
      throw this.#launchError(err, "create");
    }
    const sink = outputSink(spec.onOutput);
    let output: Promise<void>;
    try {
      const stream = await container.attach({ stream: true, stdout: true, stderr: true });
      output = this.#demux(stream, sink);
      await container.start();
    } catch (err) {
      await container.remove({ force: true }).catch(() => {});
      throw this.#launchError(err, "start");
    }
    return this.#sandbox(container, sink, output);
  }

  #launchError(err: unknown, step: string): SandboxError {
    if (err instanceof SandboxError) return err;
    if (isEngineDown(err)) return engineError(err);
    const e = err as { statusCode?: number; message?: string; json?: { message?: string } };
    const msg = e.json?.message ?? e.message ?? String(err);
    if (e.statusCode === 404 && /image/i.test(msg)) return new SandboxError(SandboxErrorCode.ImageMissing, `no image ${this.image} in the engine: run \`npm run agents -- image build\``, { cause: err });
    return new SandboxError(SandboxErrorCode.Launch, `could not ${step} the container: ${msg}`, { cause: err });
  }

  /** Demultiplexes an attach/logs stream into the sink; resolves when it ends. */
  #demux(stream: NodeJS.ReadableStream, sink: OutputSink): Promise<void> {
    const out = new PassThrough();
    const err = new PassThrough();
    out.on("data", (b: Buffer) => sink.write(b, "stdout"));
    err.on("data", (b: Buffer) => sink.write(b, "stderr"));
    this.docker.modem.demuxStream(stream, out, err);
    return new Promise((resolve) => {
      stream.on("end", () => resolve());
      stream.on("close", () => resolve());
      stream.on("error", () => resolve());
    });
  }

  #sandbox(container: Docker.Container, sink: OutputSink, output: Promise<void>): Sandbox {
    const docker = this.docker;
    let stopping = false;
    let sampler: UsageSampler | undefined;
    const started = container
      .inspect()
      .then((i) => {
        sampler = sampleUsage(docker, container.id, i.State.Running ? i.State.Pid : 0);
      })
      .catch(() => {});
    const finished: Promise<Finished> = (async () => {
      let exit: { StatusCode?: number } | undefined;
      let lost: unknown;
      try {
        exit = (await container.wait()) as { StatusCode?: number };
      } catch (err) {
        lost = err;
      }
      await started;
      const usage = { ...(sampler?.stop() ?? {}) };
      // the attach stream ends with the container; do not hang on an engine that lost it
      await Promise.race([output, new Promise((r) => setTimeout(r, 2000).unref())]);
      sink.end();
      let oomKilled = false;
      let exitCode = exit?.StatusCode ?? -1;
      try {
        const info = await container.inspect();
        oomKilled = info.State.OOMKilled;
        exitCode = info.State.ExitCode;
        // killed for reaching its limit: it used the limit, whatever the last sample (up to 200 ms old) saw
        if (oomKilled && info.HostConfig.Memory) usage.peakMemoryBytes = Math.max(usage.peakMemoryBytes ?? 0, info.HostConfig.Memory);
        await container.remove({ force: true });
      } catch (err) {
        lost ??= err;
      }
      const reason = oomKilled ? "oom" : lost && exit === undefined ? "error" : stopping ? "stopped" : "exit";
      return {
        exitCode,
        oomKilled,
        reason,
        ...usage,
        outputTail: sink.tail(),
        ...(lost ? { error: `${(lost as Error).message ?? String(lost)}` } : {}),
      } satisfies Finished;
    })();
    return {
      id: container.id,
      wait: () => finished,
      async stop(graceMs: number) {
        stopping = true;
        const ended = finished.then(() => {});
        await container.kill({ signal: "SIGTERM" }).catch(() => {});
        const timer = setTimeout(() => void container.kill({ signal: "SIGKILL" }).catch(() => {}), Math.max(0, graceMs));
        await ended;
        clearTimeout(timer);
      },
    };
  }

  /**
   * The driver's containers whose labels include `labels`: running ones, and ones that ended while
   * nobody waited (their `attach().wait()` gives the exit state at once and removes them).
   */
  async running(labels: Record<string, string>): Promise<Found[]> {
    let list: Docker.ContainerInfo[];
    try {
      list = await this.docker.listContainers({ all: true, filters: JSON.stringify({ label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) }) });
    } catch (err) {
      throw engineError(err);
    }
    return list
      .filter((c) => c.State === "running" || c.State === "exited")
      .map((c) => ({
        id: c.Id,
        labels: c.Labels,
        state: c.State as "running" | "exited",
        attach: (onOutput?: LaunchSpec["onOutput"]) => {
          const container = this.docker.getContainer(c.Id);
          const sink = outputSink(onOutput);
          const output = container
            .logs({ follow: true, stdout: true, stderr: true })
            .then((s) => this.#demux(s as unknown as NodeJS.ReadableStream, sink))
            .catch(() => {});
          return this.#sandbox(container, sink, output);
        },
      }));
  }

  async close(): Promise<void> {
    const relays = [...this.#relays.values()];
    this.#relays.clear();
    await Promise.all(relays.map((r) => r.then((x) => x.close()).catch(() => {})));
  }
}
