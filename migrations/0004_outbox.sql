-- The transactional outbox: events waiting for the relay. A row is written in the
-- transaction of the change it describes, so an event exists exactly when its change
-- committed; the relay deletes it only after JetStream acknowledged the publish.
CREATE TABLE outbox (
    -- Publish order.
    id            BIGSERIAL PRIMARY KEY,
    -- The CloudEvents id, published as `Nats-Msg-Id` so a replayed row is de-duplicated.
    event_id      UUID NOT NULL UNIQUE,
    -- The NATS subject the event goes to.
    subject       TEXT NOT NULL,
    -- Events with the same key (the repository) are published in id order; different
    -- keys may go in parallel.
    ordering_key  TEXT NOT NULL,
    -- The CloudEvents JSON envelope, byte for byte as published.
    payload       BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX outbox_by_ordering_key ON outbox (ordering_key, id);
