// syntropism/testing: helpers for testing your own functions against a real nats-server — the
// ones this project's tests use. A suite starts a server on a random loopback port with a
// temporary store (stopped and deleted after it), runs an in-process Host on its functions folder,
// and polls for outcomes:
//
//   const scope = suiteScope(after);
//   before(async () => { nats = await startTestNats(scope); host = await startTestHost(scope, nats, { functionsDir }); });

export { startTestNats, startRestartableNats, suiteScope } from "./nats.ts";
export type { TestNats, RestartableNats } from "./nats.ts";
export { waitFor } from "./wait.ts";
export { startTestHost } from "./host.ts";
