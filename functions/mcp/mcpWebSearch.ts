import { createHash } from "node:crypto";
import * as v from "valibot";
import { defineFunction, NonRetriableError } from "syntropism";
import { loadSettings } from "../../config/settings.ts";
import { canonicalJson } from "../../host/canonicalJson.ts";
import { RateLimiter } from "../../host/rateLimit.ts";
import { checkParams, GatewayError } from "../../gateway/client.ts";
import { agentInbox } from "../../contract/subjects.ts";
import { toolCacheTtl, toolCost } from "../../gateway/config.ts";
import { gateway } from "../../gateway/runtime.ts";
import { EconomyErrorCode, InsufficientFundsError, isEconomyError, refuse, UnknownAgentError } from "../../economy/errors.ts";
import { burn } from "../../economy/ledger.ts";
import { toMicro } from "../../economy/money.ts";
import { AGENT_STATE, projectAgents } from "../../economy/projections.ts";
import { economy } from "../../economy/resource.ts";
import { causeOf } from "../../economy/runtime.ts";
import type { EventPayload } from "../../economy/catalogue.ts";

// `nats pub mcp.request.web_search.alice '{"agent_id":"alice","server":"search","tool":"web_search",
//   "params":{"query":"nats kv"},"reply_subject":"agent.alice.inbox.mcp"}'` — an agent calls an MCP tool
// through the gateway (docs/gateway.md). The subject is `mcp.request.<tool>.<agent_id>`
// (contract/subjects.ts, Subjects.mcpRequest): its last token is the sender, the one thing an
// agent's credentials vouch for, and the body's agent_id must be the same (else IDENTITY_MISMATCH:
// dead-lettered at once, no reply, nothing charged). The form without it, `mcp.request.<tool>`, is
// for trusted publishers (services, operators) and takes the body's agent_id as it is. The payload
// says what is called, the subject routes and says who asks. In order: a terminated agent is
// refused (AGENT_TERMINATED: an error reply and a dead letter); the server and tool must exist and the params
// fit the tool's schema (else an error reply and a dead letter); the agent's hourly quota (else an
// error reply, acknowledged); the price is burned from the agent's credits once per request id
// (else an error reply, acknowledged); the KV cache; the call with its timeout; the reply on
// reply_subject (core NATS); the mcp_completed event on AUDIT through the outbox. A timeout or a
// dead server is retried with backoff (the charge is idempotent, so never twice); the last attempt
// also replies with the error before the host dead-letters the request.

// attempts are fixed when the file loads (a consumer's max_deliver), from MCP_MAX_DELIVER
export const MCP_MAX_DELIVER = loadSettings().gateway.maxDeliver;
const QUOTA_PERIOD_MS = 3600_000;
const CACHE = "mcp_cache";
const QUOTAS = "mcp_quotas";
const USAGE = "mcp_usage";

type Outcome = EventPayload<"mcp_completed">["outcome"];

const subject = v.pipe(v.string(), v.regex(/^[^\s*>]+$/, "a subject without spaces or wildcards"), v.maxLength(256));

export default defineFunction({
  description: "MCP gateway: runs an agent's tool call on an MCP server (quota, charge, cache, timeout, retries)",
  trigger: { type: "jetstream", stream: "MCP", subject: "mcp.request.>" },
  schema: v.object({
    agent_id: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/)),
    server: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
    tool: v.pipe(v.string(), v.minLength(1), v.maxLength(128)),
    params: v.optional(v.record(v.string(), v.unknown()), {}),
    reply_subject: subject,
    timeout_ms: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(60_000))),
    correlation_id: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(200))),
    msg_id: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(200))),
  }),
  concurrency: 16,
  maxDeliver: MCP_MAX_DELIVER,
  timeoutMs: 90_000,
  backoff: { initialMs: 500, maxMs: 10_000, factor: 2, jitter: 0.2 },
  resources: { economy, gateway },
  handler: async (p, ctx) => {
    const started = Date.now();
    const { economy: eco, gateway: { mcp: gw, defaultCallsPerHour } } = ctx.resources;
    const sql = await eco.database();
    const requestId = p.msg_id ?? ctx.msgId;
    const chargeId = `mcp:${requestId}`;
    const base = causeOf(ctx);
    const cause = { ...base, sourceMsgId: chargeId, correlationId: p.correlation_id ?? base.correlationId };
    const lastAttempt = ctx.attempt >= MCP_MAX_DELIVER;
    const head = { request_id: requestId, correlation_id: cause.correlationId, agent_id: p.agent_id, server: p.server, tool: p.tool };

    const finish = (outcome: Outcome, cost: number, cacheHit: boolean) =>
      eco.command(ctx, async ({ emit }) => emit({ type: "mcp_completed", payload: { request_id: requestId, agent_id: p.agent_id, server: p.server, tool: p.tool, outcome, cache_hit: cacheHit, cost, duration_ms: Date.now() - started } }), { cause });
    const replyError = (code: string, message: string, extra: Record<string, unknown> = {}) =>
      ctx.broadcast(p.reply_subject, { ...head, ok: false, error: { code, message }, ...extra });

    // 0. who asks: the sender in the subject pays, or nobody does. A mismatch gets no reply: its
    // body, reply subject included, speaks for an agent that did not send it
    const tokens = ctx.subject.split(".");
    if (tokens.length > 4) throw refuse(EconomyErrorCode.InvalidArgument, `${ctx.subject}: an MCP request's subject is mcp.request.<tool>.<agent_id>`);
    const sender = tokens[3];
    if (sender !== undefined && sender !== p.agent_id) {
      throw refuse(EconomyErrorCode.IdentityMismatch, `${ctx.subject} is agent ${sender}'s request but its agent_id is ${p.agent_id}: an agent's requests are its own, paid by itself`);
    }
    // an agent's results go to its own deliveries: the host publishes them with its rights, and an
    // agent must not choose where (another agent's subjects, an operator's, the JetStream API)
    if (sender !== undefined && !p.reply_subject.startsWith(`${agentInbox(sender)}.`)) {
      throw refuse(EconomyErrorCode.InvalidArgument, `reply_subject ${p.reply_subject} is not agent ${sender}'s: an agent's results are delivered on ${agentInbox(sender)}.<anything>`);
    }
    const [agent] = await sql<{ status: string }[]>`SELECT status FROM agents WHERE id = ${p.agent_id}`;
    if (agent?.status === "terminated") {
      const message = `agent ${p.agent_id} is terminated: it calls no tools`;
      replyError(EconomyErrorCode.AgentTerminated, message);
      throw refuse(EconomyErrorCode.AgentTerminated, message);
    }

    // 1. what is asked must exist and fit the tool's schema: otherwise it never will
    let cost: number;
    let ttlMs: number;
    try {
      const server = gw.server(p.server);
      const tool = await gw.tool(p.server, p.tool);
      const problems = checkParams(tool.inputSchema as Parameters<typeof checkParams>[0], p.params);
      if (problems.length) throw new GatewayError("INVALID_PARAMS", `invalid params for ${p.server}/${p.tool}: ${problems.join("; ")}`, false);
      cost = toolCost(server, p.tool);
      ttlMs = toolCacheTtl(server, p.tool);
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      if (err.transient) {
        if (lastAttempt) {
          replyError(err.code, err.message, { retriable: true });
          await finish("unavailable", 0, false);
        }
        throw err;
      }
      replyError(err.code, err.message);
      await finish(err.code.toLowerCase() as Outcome, 0, false);
      throw new NonRetriableError(err.message, { code: err.code, cause: err });
    }

    // 2. quota, then the charge — both once per request id: a redelivery finds its charge
    const [charged] = await sql<{ n: number }[]>`SELECT 1 AS n FROM ledger_transactions WHERE source_msg_id = ${chargeId}`;
    if (!charged) {
      const quotaEntry = await (await ctx.kv(QUOTAS)).get(p.agent_id);
      let perHour = defaultCallsPerHour;
      if (quotaEntry && quotaEntry.operation === "PUT" && quotaEntry.length > 0) {
        const q = quotaEntry.json<{ max_mcp_calls_per_hour?: unknown }>();
        if (typeof q.max_mcp_calls_per_hour === "number" && q.max_mcp_calls_per_hour >= 0) perHour = Math.floor(q.max_mcp_calls_per_hour);
      }
      const slot = perHour === 0 ? { reserved: false as const, retryInMs: QUOTA_PERIOD_MS } : await new RateLimiter(await ctx.kv(USAGE)).reserve("mcp", p.agent_id, { limit: perHour, periodMs: QUOTA_PERIOD_MS }, 0);
      if (!slot.reserved) {
        replyError("QUOTA_EXCEEDED", `agent ${p.agent_id} has used its ${perHour} MCP calls per hour; next call allowed in ${Math.ceil(slot.retryInMs / 1000)} s`, { retry_after_ms: slot.retryInMs, max_mcp_calls_per_hour: perHour });
        await finish("over_quota", 0, false);
        return;
      }
    }
    if (cost > 0) {
      try {
        const r = await burn(sql, { sourceMsgId: chargeId, from: p.agent_id, amount: toMicro(cost), correlationId: cause.correlationId, causationId: cause.causationId, memo: { mcp: `${p.server}/${p.tool}`, request_id: requestId } });
        if (!r.duplicate) await projectAgents(await ctx.kv(AGENT_STATE), sql, [p.agent_id]).catch((err: unknown) => ctx.log.warn({ err: (err as Error).message }, "agent_state projection failed"));
      } catch (err) {
        if (err instanceof InsufficientFundsError || err instanceof UnknownAgentError) {
          const code = err instanceof InsufficientFundsError ? "INSUFFICIENT_FUNDS" : "UNKNOWN_AGENT";
          replyError(code, err.message, { cost });
          await finish(code.toLowerCase() as Outcome, 0, false);
          return;
        }
        // terminated since the check above: the ledger refused the charge
        if (isEconomyError(err) && err.code === EconomyErrorCode.AgentTerminated) replyError(err.code, err.message);
        throw err;
      }
    }

    // 3. the cache: a hit answers without calling (it was charged like a call, above)
    const cacheKv = await ctx.kv(CACHE);
    const key = `c.${createHash("sha256").update(canonicalJson({ server: p.server, tool: p.tool, params: p.params })).digest("hex")}`;
    const hit = await cacheKv.get(key).catch(() => null);
    if (hit && hit.operation === "PUT" && hit.length > 0) {
      const cached = hit.json<{ result: unknown; expires_at: number }>();
      if (cached.expires_at > Date.now()) {
        ctx.broadcast(p.reply_subject, { ...head, ok: true, cache_hit: true, cost, duration_ms: Date.now() - started, result: cached.result });
        await finish("ok", cost, true);
        return;
      }
    }

    // 4. the call
    try {
      const result = await gw.call(p.server, p.tool, p.params, { timeoutMs: p.timeout_ms, signal: ctx.signal });
      if (result.isError) {
        replyError("TOOL_ERROR", "the tool reported an error", { cost, result });
        await finish("tool_error", cost, false);
        return;
      }
      if (ttlMs > 0) await cacheKv.put(key, JSON.stringify({ result, expires_at: Date.now() + ttlMs })).catch((err: unknown) => ctx.log.warn({ err: (err as Error).message }, "mcp cache write failed"));
      ctx.broadcast(p.reply_subject, { ...head, ok: true, cache_hit: false, cost, duration_ms: Date.now() - started, result });
      await finish("ok", cost, false);
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      if (err.transient) {
        if (lastAttempt) {
          replyError(err.code, `${err.message} (after ${ctx.attempt} attempts)`, { cost, retriable: true });
          await finish(err.code === "TIMEOUT" ? "timeout" : "unavailable", cost, false);
        }
        throw err; // retried with backoff; the charge above is found, not repeated
      }
      replyError(err.code, err.message, { cost });
      await finish(err.code === "TOOL_ERROR" ? "tool_error" : (err.code.toLowerCase() as Outcome), cost, false);
      throw new NonRetriableError(err.message, { code: err.code, cause: err });
    }
  },
});
