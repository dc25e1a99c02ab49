-- The resource market: what agents ask for, their bids per window, the clearing of each window,
-- and prices.
--
-- Resources and their units (one unit of quantity, for one window):
--   cpu        millicores (1000 = one core)
--   memory     MB
--   tokens     LLM tokens (the system-wide spend cap per window is the supply)
--   attention  prompts to a human
-- Prices are BIGINT micro-credits per unit.

-- What an agent asks to run with: amounts of each resource for a duration.
CREATE TABLE resource_bundles (
  id            bigserial PRIMARY KEY,
  agent_id      text NOT NULL REFERENCES agents (id),
  window_id     bigint,
  cpu           bigint NOT NULL DEFAULT 0 CHECK (cpu >= 0),
  memory_mb     bigint NOT NULL DEFAULT 0 CHECK (memory_mb >= 0),
  tokens        bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
  attention     bigint NOT NULL DEFAULT 0 CHECK (attention >= 0),
  duration_ms   bigint NOT NULL CHECK (duration_ms > 0),
  source_msg_id text UNIQUE,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resource_bundles_agent_id ON resource_bundles (agent_id);

-- One bid for one resource in one window. An open bid reserves its amount: the agent cannot spend
-- it elsewhere until the window clears (won: paid and burned; lost or rejected: released).
CREATE TABLE bids (
  id                 bigserial PRIMARY KEY,
  agent_id           text NOT NULL REFERENCES agents (id),
  window_id          bigint NOT NULL,
  resource           text NOT NULL CHECK (resource IN ('cpu', 'memory', 'tokens', 'attention')),
  quantity           bigint NOT NULL CHECK (quantity > 0),
  price_per_unit     bigint NOT NULL CHECK (price_per_unit > 0),
  amount             bigint NOT NULL CHECK (amount = quantity * price_per_unit),
  status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'won', 'lost', 'rejected')),
  -- why a bid was rejected or lost
  reason             text,
  bundle_id          bigint REFERENCES resource_bundles (id),
  -- the bid's JetStream stream sequence: ties on price go to the earlier bid, so a replay clears alike
  stream_seq         bigint,
  allocated_quantity bigint CHECK (allocated_quantity >= 0 AND allocated_quantity <= quantity),
  -- the ledger transaction that paid for a won bid
  paid_tx_id         bigint REFERENCES ledger_transactions (id),
  source_msg_id      text NOT NULL UNIQUE,
  correlation_id     text,
  created_at         timestamptz NOT NULL DEFAULT now(),
  settled_at         timestamptz,
  CONSTRAINT bids_settled CHECK ((status = 'open') = (settled_at IS NULL))
);
CREATE INDEX bids_window_resource ON bids (window_id, resource, status);
CREATE INDEX bids_open_by_agent ON bids (agent_id) WHERE status = 'open';

-- The current market per resource.
CREATE TABLE market_state (
  resource           text PRIMARY KEY CHECK (resource IN ('cpu', 'memory', 'tokens', 'attention')),
  supply             bigint NOT NULL CHECK (supply >= 0),
  price              bigint NOT NULL CHECK (price >= 0),
  floor_price        bigint NOT NULL DEFAULT 1 CHECK (floor_price >= 0),
  target_utilization double precision NOT NULL DEFAULT 0.5 CHECK (target_utilization > 0 AND target_utilization <= 1),
  utilization        double precision NOT NULL DEFAULT 0 CHECK (utilization >= 0 AND utilization <= 1),
  -- the last window that moved this price
  window_id          bigint,
  updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per cleared window: the primary key and the unique clearing message make the clearing
-- of a window happen exactly once, however many workers see the tick.
CREATE TABLE market_windows (
  window_id     bigint PRIMARY KEY,
  source_msg_id text NOT NULL UNIQUE,
  cleared_at    timestamptz NOT NULL DEFAULT now(),
  summary       jsonb NOT NULL DEFAULT '{}'
);

-- Each window's outcome per resource, for replays and charts.
CREATE TABLE market_prices (
  window_id   bigint NOT NULL REFERENCES market_windows (window_id),
  resource    text NOT NULL CHECK (resource IN ('cpu', 'memory', 'tokens', 'attention')),
  supply      bigint NOT NULL,
  demand      bigint NOT NULL,
  allocated   bigint NOT NULL,
  utilization double precision NOT NULL,
  price       bigint NOT NULL,
  next_price  bigint NOT NULL,
  PRIMARY KEY (window_id, resource)
);
