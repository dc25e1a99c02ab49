// The agent SDK: what an agent program imports (`import { connect } from "@syntropism/agent"`) to
// reach the economy. Plain ESM JavaScript, because it runs inside the agent image, which carries
// node and this folder but no TypeScript loader. It reads the execution's env.json, which the
// orchestrator wrote into the workspace, and connects to NATS with the agent's own credentials
// (they expire with its window) and inbox prefix (the server lets the agent subscribe nowhere else).
//
// Where things are: the workspace is /workspace in a container; the process driver (no container)
// sets SYNTROPISM_WORKSPACE to the host folder and SYNTROPISM_NATS_URL to the server itself, since
// there is no relay on 127.0.0.1:4222 then. A credentials_file under /workspace/ or relative to it
// is found in the workspace either way.
import { readFileSync } from "node:fs";
import { isAbsolute, join, relative } from "node:path";
import { connect as natsConnect, credsAuthenticator } from "@nats-io/transport-node";

const CONTAINER_WORKSPACE = "/workspace";

/** The workspace folder of this execution. */
export function workspaceDir() {
  return process.env.SYNTROPISM_WORKSPACE || CONTAINER_WORKSPACE;
}

/**
 * The execution's environment: env.json as written by the orchestrator ({agent_id, credits,
 * window_id, window_end, prices, nats_url, credentials_file, inbox_prefix, correlation_id}), with
 * `credentials_file` made a real path and `nats_url` the one to dial.
 */
export function loadEnv(dir = workspaceDir()) {
  const file = join(dir, "env.json");
  let env;
  try {
    env = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`agent sdk: cannot read ${file}: ${err.message}`);
  }
  for (const k of ["agent_id", "nats_url", "credentials_file", "inbox_prefix"]) {
    if (typeof env[k] !== "string" || env[k] === "") throw new Error(`agent sdk: ${file} has no ${k}`);
  }
  const creds = env.credentials_file;
  const inWorkspace = isAbsolute(creds) ? relative(CONTAINER_WORKSPACE, creds) : creds;
  const credentialsPath = inWorkspace.startsWith("..") ? creds : join(dir, inWorkspace);
  return { ...env, credentials_file: credentialsPath, nats_url: process.env.SYNTROPISM_NATS_URL || env.nats_url };
}

const encode = (body) => new TextEncoder().encode(body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body));
const decode = (msg) => {
  const text = new TextDecoder().decode(msg.data);
  return text === "" ? null : JSON.parse(text);
};

/**
 * Connects as this agent. The result: `env`, `nc` (the nats.js connection, for anything else),
 * `balance()`, `publish(subject, body)`, `event(action, body)`, `request(subject, body)`, `close()`.
 */
export async function connect(env = loadEnv(), options = {}) {
  const nc = await natsConnect({
    servers: env.nats_url,
    authenticator: credsAuthenticator(readFileSync(env.credentials_file)),
    inboxPrefix: env.inbox_prefix,
    name: `agent ${env.agent_id}`,
    ...options,
  });
  const request = async (subject, body, timeout = 5000) => {
    const reply = decode(await nc.request(subject, encode(body), { timeout }));
    if (reply && typeof reply === "object" && reply.error) {
      const err = new Error(`${subject}: ${reply.error.code}: ${reply.error.message}`);
      err.code = reply.error.code;
      throw err;
    }
    return reply;
  };
  return {
    env,
    nc,
    request,
    /** {agent_id, balance, reserved, available} in credits, from the ledger. */
    balance: (timeout = 2000) => request(`economic.balance.${env.agent_id}`, undefined, timeout),
    publish: (subject, body) => nc.publish(subject, encode(body)),
    /** Publishes one of its own events, `agent.<id>.<action>`, and waits until the server has it. */
    event: async (action, body = {}) => {
      nc.publish(`agent.${env.agent_id}.${action}`, encode({ agent_id: env.agent_id, window_id: env.window_id, ...body }));
      await nc.flush();
    },
    close: () => nc.close(),
  };
}
