import { Host, type HostOptions } from "../host/runtime.ts";
import { parseConfig } from "../host/config.ts";
import { createLogger } from "../host/log.ts";
import type { TestNats } from "./nats.ts";

type Hooks = { after: (fn: () => Promise<void>) => void };

/**
 * An in-process Host on `functionsDir` connected to a test server, streams applied, stopped after
 * the suite. Log lines (warn and up by default) are collected in `lines` rather than printed.
 */
export async function startTestHost(t: Hooks, nats: Pick<TestNats, "url" | "auth">, opts: Partial<HostOptions> & { functionsDir: string }): Promise<{ host: Host; lines: string[] }> {
  const lines: string[] = [];
  const host = new Host({
    servers: nats.url,
    // on a server with authentication, as the service
    ...(nats.auth?.options("service") ?? {}),
    config: parseConfig({}),
    onDrift: "apply",
    graceMs: 5000,
    log: createLogger({ level: "warn", sink: (l) => lines.push(l) }),
    ...opts,
  });
  t.after(() => host.stop());
  await host.start();
  return { host, lines };
}
