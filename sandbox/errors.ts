import { CodedError } from "../host/errors.ts";

// The sandbox layer's errors: one class, one catalogue of stable codes. The orchestrator decides
// from the code whether to retry a launch (engine unavailable) or give up on it (bad spec).

export const SandboxErrorCode = {
  /** The container engine does not answer (no socket, refused, restarting, 5xx). Worth retrying. */
  EngineUnavailable: "SANDBOX_ENGINE_UNAVAILABLE",
  /** The agent image is not in the engine: build it (`npm run agents -- image build`). */
  ImageMissing: "SANDBOX_IMAGE_MISSING",
  /** The image could not be assembled or imported. */
  ImageBuild: "SANDBOX_IMAGE_BUILD",
  /** A LaunchSpec that cannot be launched: limits out of range, workspace missing, a bad NATS URL. */
  InvalidSpec: "SANDBOX_INVALID_SPEC",
  /** The workspace could not be handed to the sandbox's user. */
  Workspace: "SANDBOX_WORKSPACE",
  /** The host side of the NATS relay could not listen. */
  Relay: "SANDBOX_RELAY",
  /** The engine refused to create or start the sandbox. */
  Launch: "SANDBOX_LAUNCH",
} as const;
export type SandboxErrorCode = (typeof SandboxErrorCode)[keyof typeof SandboxErrorCode];

export class SandboxError extends CodedError<SandboxErrorCode> {
  override name = "SandboxError";
}
