-- Agents run (orchestrator/): a workspace starts from a named template, an execution records how
-- it was sandboxed and how it ended, and an agent runs at most once per window whatever the
-- redeliveries (the unique index is what makes a second launch of the same window impossible).
ALTER TABLE workspaces ADD COLUMN template text NOT NULL DEFAULT 'default';
ALTER TABLE executions ADD COLUMN sandbox text;
ALTER TABLE executions ADD COLUMN limits jsonb NOT NULL DEFAULT '{}';
ALTER TABLE executions ADD COLUMN reason text;
ALTER TABLE executions ADD COLUMN output_tail text;
ALTER TABLE executions ADD COLUMN ends_at timestamptz;
-- the orchestrator running it renews a lease; one whose lease lapsed is adopted by another
ALTER TABLE executions ADD COLUMN owner text;
ALTER TABLE executions ADD COLUMN lease_until timestamptz;
CREATE UNIQUE INDEX executions_agent_window ON executions (agent_id, window_id);
CREATE INDEX executions_open ON executions (status) WHERE status IN ('pending', 'running');
