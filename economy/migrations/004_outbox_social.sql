-- Events leave through an outbox: written in the same transaction as the change they describe,
-- published to the audit stream after commit (event id = Nats-Msg-Id, so a re-publish is dropped),
-- then marked. A redelivered command finds its events here and publishes what is still unpublished.
CREATE TABLE outbox (
  seq           bigserial PRIMARY KEY,
  event_id      text NOT NULL UNIQUE,
  source_msg_id text NOT NULL,
  subject       text NOT NULL,
  envelope      jsonb NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  published_at  timestamptz
);
CREATE INDEX outbox_source ON outbox (source_msg_id);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

-- Agent-to-agent messages (social).
CREATE TABLE messages (
  id             bigserial PRIMARY KEY,
  from_agent     text NOT NULL REFERENCES agents (id),
  to_agent       text NOT NULL REFERENCES agents (id),
  body           text NOT NULL,
  source_msg_id  text NOT NULL UNIQUE,
  correlation_id text,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_to_agent ON messages (to_agent);
