import { resolve } from "node:path";
import type { JetStreamManager, MsgRequest, StoredMsg } from "@nats-io/jetstream";
import { loadConfigFile } from "../../host/configFile.ts";
import { createLogger } from "../../host/log.ts";
import { Host, type HostOptions } from "../../host/runtime.ts";
import type { TestNats } from "./nats.ts";

export const ROOT = resolve(import.meta.dirname, "../..");
export const FIXTURES = resolve(ROOT, "test/fixtures");
export const FIXTURE_FUNCTIONS = resolve(FIXTURES, "functions");
export const FIXTURE_CONFIG = resolve(FIXTURES, "streams.config.ts");

type After = { after: (fn: () => Promise<void>) => void };

/** An in-process host on the fixtures, logging into `lines` (warn and up unless LOG_LEVEL says). */
export async function startHost(t: After, nats: TestNats, opts: Partial<HostOptions> = {}) {
  const lines: string[] = [];
  const config = opts.config ?? (await loadConfigFile(FIXTURE_CONFIG));
  const host = new Host({
    servers: nats.url,
    // on a server with authentication, as the service
    ...(nats.auth?.options("service") ?? {}),
    functionsDir: FIXTURE_FUNCTIONS,
    config,
    onDrift: "apply",
    graceMs: 5000,
    log: createLogger({ level: (process.env.LOG_LEVEL as "debug") ?? "warn", sink: (l) => lines.push(l) }),
    ...opts,
  });
  t.after(() => host.stop());
  await host.start();
  return { host, lines };
}

import { waitFor } from "../../testing/wait.ts";
export { waitFor };

/** Every stored message on `filter` in `stream`, oldest first (direct gets; fine for test sizes). */
export async function readSubject(jsm: JetStreamManager, stream: string, filter: string): Promise<StoredMsg[]> {
  const info = await jsm.streams.info(stream);
  const out: StoredMsg[] = [];
  let seq = info.state.first_seq;
  while (seq <= info.state.last_seq) {
    const m = await jsm.streams.getMessage(stream, { seq, next_by_subj: filter } as unknown as MsgRequest).catch(() => null);
    if (!m) break;
    out.push(m);
    seq = m.seq + 1;
  }
  return out;
}

export async function countSubject(jsm: JetStreamManager, stream: string, filter: string): Promise<number> {
  const info = await jsm.streams.info(stream, { subjects_filter: filter });
  return Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
}

export { HOST_BIN, runCli, runNode, startCli, type CliProcess, type RunResult } from "../../testing/cli.ts";
