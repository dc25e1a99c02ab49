// The image's default agent, run when the workspace holds no agent.mjs of its own: one cognitive
// cycle that proves the path works — connect through the relay with its credentials, ask its
// balance, say it started and finished, exit 0.
import { connect } from "@syntropism/agent";

const agent = await connect();
await agent.event("cognitive_cycle_started");
let balance;
try {
  balance = await agent.balance();
} catch (err) {
  // no ledger answering (a bare NATS server): the cycle still completes, and says so
  balance = { error: err.message };
}
console.log(JSON.stringify({ agent_id: agent.env.agent_id, window_id: agent.env.window_id, balance }));
await agent.event("cognitive_cycle_completed");
await agent.close();
