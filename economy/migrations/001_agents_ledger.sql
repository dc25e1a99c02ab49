-- Agents and the double-entry ledger.
--
-- Amounts are BIGINT micro-credits (1 credit = 1,000,000). Every movement of credits is one
-- ledger transaction (unique source message id) with entries whose deltas sum to zero; account
-- balances are kept by a trigger from the entries and cannot be changed any other way; the ledger
-- is append-only.

CREATE TABLE agents (
  id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
  -- spawn lineage: the agent that created (and funded) this one
  parent_id     text REFERENCES agents (id),
  status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'terminated')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  -- the command that created the agent (spawn, scenario setup); NULL for agents opened directly
  source_msg_id text UNIQUE,
  metadata      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX agents_parent_id ON agents (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE workspaces (
  agent_id   text PRIMARY KEY REFERENCES agents (id),
  path       text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- `agent:<agent id>` for each agent; `system:mint` issues credits (its balance is minus everything
-- ever issued), `system:burn` receives credits spent on resources.
CREATE TABLE accounts (
  id         text PRIMARY KEY,
  kind       text NOT NULL CHECK (kind IN ('agent', 'system')),
  agent_id   text UNIQUE REFERENCES agents (id),
  balance    bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT accounts_agent_id CHECK ((kind = 'agent') = (agent_id IS NOT NULL) AND (kind <> 'agent' OR id = 'agent:' || agent_id)),
  CONSTRAINT accounts_system_id CHECK (kind <> 'system' OR id IN ('system:mint', 'system:burn')),
  CONSTRAINT accounts_agent_not_negative CHECK (kind <> 'agent' OR balance >= 0),
  CONSTRAINT accounts_mint_not_positive CHECK (id <> 'system:mint' OR balance <= 0),
  CONSTRAINT accounts_burn_not_negative CHECK (id <> 'system:burn' OR balance >= 0)
);
INSERT INTO accounts (id, kind) VALUES ('system:mint', 'system'), ('system:burn', 'system');

CREATE TABLE ledger_transactions (
  id             bigserial PRIMARY KEY,
  -- the message that caused the movement: a redelivered command finds its transaction here
  source_msg_id  text NOT NULL UNIQUE CHECK (length(source_msg_id) BETWEEN 1 AND 512),
  kind           text NOT NULL CONSTRAINT ledger_transactions_kind
                   CHECK (kind IN ('genesis', 'reward', 'transfer', 'spawn', 'payment', 'refund', 'burn')),
  correlation_id text,
  causation_id   text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  memo           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ledger_transactions_correlation_id ON ledger_transactions (correlation_id) WHERE correlation_id IS NOT NULL;

CREATE TABLE ledger_entries (
  id         bigserial PRIMARY KEY,
  tx_id      bigint NOT NULL REFERENCES ledger_transactions (id),
  account_id text NOT NULL REFERENCES accounts (id),
  delta      bigint NOT NULL CHECK (delta <> 0),
  UNIQUE (tx_id, account_id)
);
CREATE INDEX ledger_entries_account_id ON ledger_entries (account_id);

-- Balances move only through entries.
CREATE FUNCTION ledger_apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE accounts SET balance = balance + NEW.delta WHERE id = NEW.account_id;
  RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_apply AFTER INSERT ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_apply_entry();

CREATE FUNCTION accounts_guard_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- depth 1 is a direct UPDATE; the entry trigger's UPDATE runs at depth 2
  IF NEW.balance IS DISTINCT FROM OLD.balance AND pg_trigger_depth() < 2 THEN
    RAISE EXCEPTION 'account % balance changes only through ledger entries', OLD.id USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER accounts_guard_balance BEFORE UPDATE ON accounts
  FOR EACH ROW EXECUTE FUNCTION accounts_guard_balance();

-- Every transaction balances (its deltas sum to zero) and has at least two entries: checked at
-- commit, when all of a transaction's entries are in.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  tx bigint;
  total numeric;
  n int;
BEGIN
  -- (NEW's fields are resolved when a statement first runs, so each table gets its own branch)
  IF TG_TABLE_NAME = 'ledger_entries' THEN
    tx := NEW.tx_id;
  ELSE
    tx := NEW.id;
  END IF;
  SELECT coalesce(sum(delta), 0), count(*) INTO total, n FROM ledger_entries WHERE tx_id = tx;
  IF total <> 0 OR n < 2 THEN
    RAISE EXCEPTION 'ledger transaction % does not balance (sum %, % entries)', tx, total, n USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

-- Append-only: corrections are new transactions (a refund), never edits.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
