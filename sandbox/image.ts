import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, join, posix, relative, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import type Docker from "dockerode";
import tar from "tar-stream";
import { SandboxError, SandboxErrorCode } from "./errors.ts";

// The agent image, built without a registry or a Dockerfile: a root filesystem holding this
// machine's node binary and every shared library `ldd` lists for it (at the same paths), a
// passwd/group with nobody/nogroup (65534), the empty mount points, and /opt/agent — the launcher,
// the SDK, the default agent and the node_modules the SDK needs, copied from the repository's.
// It is streamed as a tar into the engine's import (`docker import`), with the command, user and
// working directory set on import. The tag is `syntropism-agent:<hash>`, the hash covering every
// file that goes in (bytes and mode) and the image's settings, so a changed input is a new tag and
// an unchanged one needs no build.

export const IMAGE_REPO = "syntropism-agent";
/** Bump when the layout changes in a way the file list alone does not show. */
const LAYOUT_VERSION = "1";
const AGENT_FILES = ["launcher.mjs", "sdk.mjs", "default-agent.mjs", "hooks.mjs"];
/** The SDK's imports; everything they depend on comes along. */
const AGENT_PACKAGES = ["@nats-io/transport-node"];
const MTIME = new Date("2020-01-01T00:00:00Z");

type Entry =
  | { path: string; type: "directory"; mode: number }
  | { path: string; type: "file"; mode: number; source: string; size: number }
  | { path: string; type: "file"; mode: number; content: Buffer; size: number };

export type ImagePlan = {
  tag: string;
  hash: string;
  entries: Entry[];
  /** Dockerfile instructions applied at import. */
  changes: string[];
  nodePath: string;
};

const ROOT = resolve(import.meta.dirname, "..");

/** The shared libraries `ldd` lists for a binary (absolute paths; the vDSO has none). */
export function sharedLibraries(binary: string): string[] {
  const r = spawnSync("ldd", [binary], { encoding: "utf8" });
  if (r.status !== 0) throw new SandboxError(SandboxErrorCode.ImageBuild, `ldd ${binary} failed: ${(r.stderr || r.error?.message || "").trim()} (the image is assembled from this machine's node; Linux with glibc only)`);
  const libs = new Set<string>();
  for (const line of r.stdout.split("\n")) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.add(m[1]!);
  }
  return [...libs].sort();
}

/** Package folders (relative to the repository) that `names` need, found as node resolves them. */
export function packageClosure(names: string[], root = ROOT): string[] {
  const found = new Set<string>();
  const visit = (name: string, from: string) => {
    for (let dir = from; ; dir = dirname(dir)) {
      const candidate = join(dir, "node_modules", name);
      if (existsSync(join(candidate, "package.json"))) {
        const rel = relative(root, candidate);
        if (found.has(rel)) return;
        found.add(rel);
        const pkg = JSON.parse(readFileSync(join(candidate, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
        for (const dep of Object.keys(pkg.dependencies ?? {})) visit(dep, candidate);
        return;
      }
      if (dir === root || dir === dirname(dir)) throw new SandboxError(SandboxErrorCode.ImageBuild, `${name} (needed by the agent SDK) is not installed under ${root}: run npm ci`);
    }
  };
  for (const n of names) visit(n, root);
  return [...found].sort();
}

function filesOf(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => !f.split("/").includes("node_modules") && !f.endsWith(".map") && !f.endsWith(".d.ts"))
    .filter((f) => statSync(join(dir, f)).isFile())
    .sort();
}

const text = (s: string): Buffer => Buffer.from(s);

/** Everything that goes into the image, and its tag. Reads (and hashes) every file once. */
export function planImage(opts: { nodePath?: string; root?: string } = {}): ImagePlan {
  const root = opts.root ?? ROOT;
  const nodePath = opts.nodePath ?? process.execPath;
  const entries: Entry[] = [];
  const dirs = new Set<string>();
  const addDir = (p: string, mode = 0o755) => {
    if (p === "/" || dirs.has(p)) return;
    addDir(posix.dirname(p));
    dirs.add(p);
    entries.push({ path: p, type: "directory", mode });
  };
  const addFile = (p: string, source: string) => {
    addDir(posix.dirname(p));
    const st = statSync(source);
    entries.push({ path: p, type: "file", mode: st.mode & 0o555, source: realpathSync(source), size: st.size });
  };
  const addText = (p: string, content: string, mode = 0o444) => {
    addDir(posix.dirname(p));
    const b = text(content);
    entries.push({ path: p, type: "file", mode, content: b, size: b.length });
  };

  addFile(nodePath, nodePath);
  for (const lib of sharedLibraries(nodePath)) addFile(lib, lib);
  addText("/etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n");
  addText("/etc/group", "root:x:0:\nnogroup:x:65534:\n");
  addDir("/tmp", 0o1777);
  addDir("/workspace");
  addDir("/run/nats");
  addDir("/opt/agent");
  addText("/opt/agent/package.json", `${JSON.stringify({ name: "syntropism-agent-image", private: true, type: "module" })}\n`);
  for (const f of AGENT_FILES) addFile(`/opt/agent/${f}`, join(root, "agent", f));
  for (const pkg of packageClosure(AGENT_PACKAGES, root)) {
    for (const f of filesOf(join(root, pkg))) addFile(posix.join("/opt/agent", pkg, f), join(root, pkg, f));
  }

  const changes = [
    `CMD ${JSON.stringify([nodePath, "/opt/agent/launcher.mjs"])}`,
    "WORKDIR /workspace",
    "USER 65534:65534",
    "ENV HOME=/tmp",
    "ENV SYNTROPISM_WORKSPACE=/workspace",
    "ENV SYNTROPISM_NATS_SOCKET=/run/nats/nats.sock",
  ];
  const h = createHash("sha256");
  h.update(`layout ${LAYOUT_VERSION}\n${changes.join("\n")}\n`);
  for (const e of entries) {
    h.update(`${e.type} ${e.path} ${e.mode.toString(8)}`);
    if (e.type === "file") h.update(` ${createHash("sha256").update("content" in e ? e.content : readFileSync(e.source)).digest("hex")}`);
    h.update("\n");
  }
  const hash = h.digest("hex");
  return { tag: `${IMAGE_REPO}:${hash.slice(0, 16)}`, hash, entries, changes, nodePath };
}

/** Streams the plan as a tar (what `docker import` reads). */
export function imageTar(plan: ImagePlan): NodeJS.ReadableStream {
  const pack = tar.pack();
  void (async () => {
    try {
      for (const e of plan.entries) {
        const name = e.path.slice(1);
        if (e.type === "directory") {
          pack.entry({ name, type: "directory", mode: e.mode, mtime: MTIME, uid: 0, gid: 0 });
          continue;
        }
        const header = { name, type: "file" as const, mode: e.mode, size: e.size, mtime: MTIME, uid: 0, gid: 0 };
        if ("content" in e) {
          pack.entry(header, e.content);
          continue;
        }
        await new Promise<void>((resolve, reject) => {
          const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
          pipeline(createReadStream(e.source), sink).catch(reject);
        });
      }
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
    }
  })();
  return pack as unknown as NodeJS.ReadableStream;
}

export type ImageStatus = { tag: string; present: boolean; sizeBytes?: number; created?: string };

export async function imageStatus(docker: Docker, plan = planImage()): Promise<ImageStatus> {
  try {
    const info = await docker.getImage(plan.tag).inspect();
    return { tag: plan.tag, present: true, sizeBytes: info.Size, created: info.Created };
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return { tag: plan.tag, present: false };
    throw engineError(err);
  }
}

/** Builds the image unless its tag is there already. `built: false` when it was. */
export async function ensureImage(docker: Docker, plan = planImage()): Promise<{ tag: string; built: boolean; ms: number }> {
  const t0 = performance.now();
  if ((await imageStatus(docker, plan)).present) return { tag: plan.tag, built: false, ms: performance.now() - t0 };
  const [repo, tag] = plan.tag.split(":") as [string, string];
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.importImage(imageTar(plan), { repo, tag, changes: plan.changes } as object);
  } catch (err) {
    throw new SandboxError(SandboxErrorCode.ImageBuild, `importing ${plan.tag} failed: ${(err as Error).message}`, { cause: err });
  }
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null, events: Array<{ error?: string; errorDetail?: { message?: string } }>) => {
        const failed = err?.message ?? events.find((e) => e.error || e.errorDetail)?.error;
        if (failed) reject(new SandboxError(SandboxErrorCode.ImageBuild, `importing ${plan.tag} failed: ${failed}`));
        else resolve();
      },
    );
  });
  if (!(await imageStatus(docker, plan)).present) throw new SandboxError(SandboxErrorCode.ImageBuild, `importing ${plan.tag} reported success but the engine does not have it`);
  return { tag: plan.tag, built: true, ms: performance.now() - t0 };
}

/** An engine call that failed for want of an engine, as the catalogue's error. */
export function engineError(err: unknown): SandboxError {
  const e = err as { code?: string; statusCode?: number; message?: string };
  return new SandboxError(SandboxErrorCode.EngineUnavailable, `the Docker engine does not answer: ${e.code ?? e.statusCode ?? ""} ${e.message ?? String(err)}`.replace(/\s+/g, " ").trim(), { cause: err });
}
