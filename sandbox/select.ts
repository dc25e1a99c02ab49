import type { Settings } from "../config/settings.ts";
import { DockerDriver, dockerClient } from "./docker.ts";
import { SandboxError, SandboxErrorCode } from "./errors.ts";
import { ensureImage, planImage } from "./image.ts";
import { ProcessDriver } from "./process.ts";
import type { SandboxDriver } from "./types.ts";

// Which driver runs agents (SANDBOX_DRIVER): `docker` or nothing; `process`, loudly; `auto` —
// Docker when its engine answers (building the agent image if this machine's is not there yet),
// else the process driver, saying loudly why and what that means.

export const UNISOLATED_WARNING =
  "AGENTS RUN WITHOUT ISOLATION: the process driver starts them as plain child processes — no memory, CPU or process limits, full access to this machine's files and network. Use it only for agents you trust.";

export async function selectDriver(settings: Settings, log: (line: string) => void = (l) => console.error(l)): Promise<SandboxDriver> {
  const choice = settings.sandbox.driver;
  if (choice === "process") {
    log(`sandbox: process driver (SANDBOX_DRIVER=process). ${UNISOLATED_WARNING}`);
    return new ProcessDriver();
  }
  const docker = dockerClient(settings.sandbox.dockerHost);
  const plan = planImage();
  const driver = new DockerDriver({ docker, image: plan.tag });
  try {
    await docker.ping();
  } catch {
    const probe = await driver.probe();
    const reason = probe.ok ? "the engine did not answer" : probe.reason;
    if (choice === "docker") throw new SandboxError(SandboxErrorCode.EngineUnavailable, `SANDBOX_DRIVER=docker: ${reason}`);
    log(`sandbox: Docker is not available (${reason}); falling back to the process driver. ${UNISOLATED_WARNING}`);
    return new ProcessDriver();
  }
  const built = await ensureImage(docker, plan);
  log(`sandbox: docker driver, engine ${driver.where}, image ${built.tag}${built.built ? ` (built in ${Math.round(built.ms)} ms)` : ""}`);
  return driver;
}
