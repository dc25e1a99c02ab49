import type { Permissions } from "@nats-io/jwt";
import { subjectToken } from "../contract/subjects.ts";

// Who may publish and subscribe to what. The server enforces these: they are written into each
// user's JWT. docs/security.md's permission table is generated from this file (test/auth.test.ts
// checks that they agree).
//
// The rule everything rests on: an agent can publish only subjects that carry its own id, so a
// function knows the sender from the subject (ctx.subject), and a subject without an agent id
// reaches a function only from a trusted identity (service, operator, scenario runner).

export type Role = "service" | "admin" | "scenario";

export const ROLES: Record<Role, { who: string; permissions: Permissions }> = {
  // host workers: everything in the account except operator commands (a bug in a function must not
  // be able to mint credits through admin.*), and the JetStream API's destructive calls (no function
  // deletes or purges a stream; operators do, with the CLI)
  service: { who: "host workers (`host start`, `host dev`)", permissions: { pub: { deny: ["admin.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>"] } } },
  // the operator CLIs (host, economy, dlq replay, the NATS CLI with admin.creds)
  admin: { who: "operators: the CLIs and the NATS CLI", permissions: {} },
  // `scenario run` creates genesis agents, grants rewards and reads AUDIT: an operator's rights
  scenario: { who: "the scenario runner", permissions: {} },
};

/** An agent's inbox prefix: nats.js `inboxPrefix`, so replies to it come to `_INBOX.<id>.…`. */
export const agentInboxPrefix = (agentId: string) => `_INBOX.${subjectToken(agentId, "agent id")}`;

type Rule = { subject: string; why: string };

/** What an agent may do; `<id>` is its own id. Everything else is refused by the server. */
export const AGENT_RULES: { publish: Rule[]; subscribe: Rule[] } = {
  publish: [
    { subject: "market.bid.<id>", why: "place its bids" },
    { subject: "agent.<id>.*", why: "its own commands and events: messages, prompts, cognitive cycles (three tokens: never its inbox)" },
    { subject: "economic.transfer.<id>", why: "transfer its credits" },
    { subject: "economic.spawn.<id>", why: "spawn a child from its credits" },
    { subject: "economic.balance.<id>", why: "request its balance" },
    { subject: "llm.invoke.<id>", why: "request an LLM completion under its token allocation" },
    { subject: "mcp.request.*.<id>", why: "call a tool through the MCP gateway" },
    { subject: "market.prices", why: "request the current prices" },
    { subject: "trace.agent.<id>.>", why: "its own spans, for the trace bridge" },
    { subject: "$JS.API.DIRECT.GET.KV_market_prices.$KV.market_prices.*", why: "read prices from KV (read-only)" },
    { subject: "$JS.API.DIRECT.GET.KV_agent_state.$KV.agent_state.<id>", why: "read its own balance from KV (read-only)" },
  ],
  subscribe: [
    { subject: "_INBOX.<id>.>", why: "replies to its requests (nats.js `inboxPrefix: \"_INBOX.<id>\"`)" },
    { subject: "market.price_update", why: "price broadcasts after each window" },
    { subject: "agent.<id>.inbox.>", why: "deliveries to it: MCP results (`reply_subject`)" },
  ],
};

/** Denied even if an allow rule above were ever widened by mistake (deny wins in NATS). */
export const AGENT_DENY_PUBLISH = ["admin.>", "system.>", "$SYS.>", "$KV.>", "$JS.API.STREAM.>", "$JS.API.CONSUMER.>", "$JS.ACK.>"];

/**
 * What the application account exports to the agents' account: services for everything agents
 * publish (their requests' replies are routed back by the server, never published on a subject the
 * agent chose), streams for what they subscribe to. Agents live in an account of their own: a
 * reply subject is where the *server* publishes a stored message's acknowledgement, and in one
 * shared account an agent could point it at `$JS.API.STREAM.PURGE.AUDIT` — seen on nats-server
 * 2.9.10, test/auth.test.ts. Across accounts the acknowledgement goes back to the agents' account,
 * which has no JetStream.
 */
export function agentExports(): { services: string[]; streams: string[] } {
  const generic = (r: Rule) => r.subject.replaceAll("<id>", "*");
  return {
    services: AGENT_RULES.publish.map(generic),
    streams: AGENT_RULES.subscribe.filter((r) => !r.subject.startsWith("_INBOX.")).map(generic),
  };
}

/** The JWT permissions of agent `agentId`. */
export function agentPermissions(agentId: string): Permissions {
  const id = subjectToken(agentId, "agent id");
  const fill = (r: Rule) => r.subject.replaceAll("<id>", id);
  return {
    pub: { allow: AGENT_RULES.publish.map(fill), deny: AGENT_DENY_PUBLISH },
    sub: { allow: AGENT_RULES.subscribe.map(fill) },
  };
}

/** Per-connection limits of an agent (the account's are unlimited). */
export const AGENT_LIMITS = { subs: 100, payload: 1024 * 1024, data: -1 } as const;

/** docs/security.md's permission table (test/auth.test.ts checks the document holds exactly this). */
export function permissionTable(): string {
  const rows = [
    "| identity | account | publish | subscribe | what for |",
    "|---|---|---|---|---|",
    ...(Object.entries(ROLES) as [Role, (typeof ROLES)[Role]][]).map(
      ([role, r]) => `| ${role} | SYNTROPISM | everything${r.permissions.pub?.deny?.length ? ` except ${r.permissions.pub.deny.map((d) => `\`${d}\``).join(", ")}` : ""} | everything | ${r.who} |`,
    ),
    ...AGENT_RULES.publish.map((r) => `| agent \`<id>\` | AGENTS | \`${r.subject}\` | | ${r.why} |`),
    ...AGENT_RULES.subscribe.map((r) => `| agent \`<id>\` | AGENTS | | \`${r.subject}\` | ${r.why} |`),
    `| agent \`<id>\` | AGENTS | denied even if allowed above: ${AGENT_DENY_PUBLISH.map((d) => `\`${d}\``).join(", ")} | everything else is refused | |`,
  ];
  return `${rows.join("\n")}\n`;
}
