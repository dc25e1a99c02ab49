// The first process of an agent's sandbox (pid 1 in a container), and the agent's own process:
// the agent program runs in it, so that the memory the agent paid for is not spent on a second
// node. Plain ESM JavaScript: the image has node but no TypeScript loader. It
//
// 1. runs the NATS relay's inner half when SYNTROPISM_NATS_SOCKET names one (the image sets
//    /run/nats/nats.sock): the container has no network (`--network none`), only its own loopback,
//    so this listens on 127.0.0.1:4222 there and pipes each connection to the host's relay socket,
//    bind-mounted read-only at /run/nats. The agent dials `nats://127.0.0.1:4222` like any NATS
//    client and reaches the one server it may reach. The relay never keeps the process alive: when
//    the agent has closed its connection and has nothing left to do, the process ends, exit 0.
//    (The process driver sets no socket: the agent dials the server itself.)
// 2. makes `@syntropism/agent` (the SDK beside this file) importable by name (hooks.mjs);
// 3. imports the agent program: <workspace>/agent.mjs when there is one, else the default agent;
// 4. ends on SIGTERM with status 143 unless the agent listens for SIGTERM itself (then it decides
//    when to exit). As pid 1 it would otherwise ignore SIGTERM, and `stop` could only kill.
import { existsSync } from "node:fs";
import { register } from "node:module";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const SOCKET = process.env.SYNTROPISM_NATS_SOCKET;
const WORKSPACE = process.env.SYNTROPISM_WORKSPACE || "/workspace";
const say = (msg) => process.stderr.write(`launcher: ${msg}\n`);

for (const [sig, n] of [["SIGTERM", 15], ["SIGINT", 2], ["SIGHUP", 1]]) {
  const own = () => {
    if (process.listenerCount(sig) === 1) process.exit(128 + n);
  };
  process.on(sig, own);
}

function relay(socket) {
  const server = createServer((inner) => {
    const outer = createConnection(socket);
    inner.unref();
    outer.unref();
    inner.pipe(outer);
    outer.pipe(inner);
    inner.on("error", () => outer.destroy());
    outer.on("error", (err) => {
      say(`relay: ${socket}: ${err.code ?? err.message}`);
      inner.destroy();
    });
    inner.on("close", () => outer.destroy());
    outer.on("close", () => inner.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(4222, "127.0.0.1", () => {
      server.unref();
      resolve();
    });
  });
}

if (SOCKET) {
  try {
    await relay(SOCKET);
  } catch (err) {
    say(`cannot listen on 127.0.0.1:4222: ${err.message}`);
    process.exit(70);
  }
}
register("./hooks.mjs", import.meta.url);
const own = join(WORKSPACE, "agent.mjs");
const program = existsSync(own) ? own : new URL("./default-agent.mjs", import.meta.url).pathname;
await import(pathToFileURL(program).href);
