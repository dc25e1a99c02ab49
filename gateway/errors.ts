import { CodedError } from "../host/errors.ts";

// The gateway's errors: one class, one catalogue of stable codes.

/** The gateway's error catalogue; the codes are also what an agent's error reply carries. */
export const GatewayErrorCode = {
  UnknownServer: "UNKNOWN_SERVER",
  UnknownTool: "UNKNOWN_TOOL",
  InvalidParams: "INVALID_PARAMS",
  Timeout: "TIMEOUT",
  Unavailable: "UNAVAILABLE",
  ToolError: "TOOL_ERROR",
  /** gateway/servers.json (or MCP_GATEWAY_CONFIG) does not validate. */
  Config: "GATEWAY_CONFIG",
} as const;
export type GatewayErrorCode = (typeof GatewayErrorCode)[keyof typeof GatewayErrorCode];

/** `transient`: worth retrying (timeout, server down); otherwise the same request will fail again. */
export class GatewayError extends CodedError<GatewayErrorCode> {
  override name = "GatewayError";
  constructor(
    code: GatewayErrorCode,
    message: string,
    readonly transient: boolean,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}
