import { defineResource } from "syntropism";
import { settingsOf } from "../config/settings.ts";
import { economy } from "../economy/resource.ts";
import { credentials } from "../auth/resource.ts";
import { selectDriver } from "../sandbox/select.ts";
import { Orchestrator } from "./orchestrator.ts";

// The orchestrator as a host resource: one per host, with the sandbox driver SANDBOX_DRIVER picks
// (Docker when its engine answers, else plain processes, said loudly), the economy's database for
// the executions, and the agents' credentials. Released when the host stops: it stops watching;
// running containers keep their window and are adopted after a restart.
export const orchestrator = defineResource({
  name: "orchestrator",
  async setup(ctx) {
    const settings = settingsOf(ctx.settings);
    const eco = await ctx.use(economy);
    const creds = await ctx.use(credentials);
    const driver = await selectDriver(settings, (line) => ctx.log.warn({}, line));
    const o = new Orchestrator({
      sql: () => eco.database(),
      driver,
      credentials: creds,
      workspacesRoot: settings.agents.workspaces,
      // the server this host talks to, which the sandboxes reach through the relay
      natsUrl: settings.nats.url?.split(",")[0]?.trim() || `nats://${ctx.nc.getServer()}`,
      stopGraceMs: settings.agents.stopGraceMs,
      pidsLimit: settings.agents.pidsLimit,
      log: ctx.log,
    });
    o.start();
    return o;
  },
  async release(o) {
    await o.close();
    await o.driver.close();
  },
});
