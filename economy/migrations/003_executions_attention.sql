-- What agents run, and human attention: prompts an agent puts to a human and the answers.

CREATE TABLE executions (
  id            bigserial PRIMARY KEY,
  agent_id      text NOT NULL REFERENCES agents (id),
  bundle_id     bigint REFERENCES resource_bundles (id),
  window_id     bigint,
  status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'killed')),
  container_id  text,
  exit_code     integer,
  -- measured use: cpu_ms, memory_peak_mb, tokens …
  usage         jsonb NOT NULL DEFAULT '{}',
  error         text,
  source_msg_id text NOT NULL UNIQUE,
  correlation_id text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  started_at    timestamptz,
  finished_at   timestamptz
);
CREATE INDEX executions_agent_id ON executions (agent_id);

CREATE TABLE prompts (
  id             bigserial PRIMARY KEY,
  agent_id       text NOT NULL REFERENCES agents (id),
  execution_id   bigint REFERENCES executions (id),
  question       text NOT NULL,
  context        jsonb NOT NULL DEFAULT '{}',
  status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'expired', 'cancelled')),
  source_msg_id  text NOT NULL UNIQUE,
  correlation_id text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz,
  answered_at    timestamptz
);
CREATE INDEX prompts_open ON prompts (created_at) WHERE status = 'open';

-- A human's answer to a prompt; a reward mints credits to the agent (reward_tx_id).
CREATE TABLE responses (
  id            bigserial PRIMARY KEY,
  prompt_id     bigint NOT NULL UNIQUE REFERENCES prompts (id),
  responder     text NOT NULL,
  body          text NOT NULL,
  reward        bigint NOT NULL DEFAULT 0 CHECK (reward >= 0),
  reward_tx_id  bigint REFERENCES ledger_transactions (id),
  source_msg_id text NOT NULL UNIQUE,
  created_at    timestamptz NOT NULL DEFAULT now()
);
