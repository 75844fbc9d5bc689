-- The replicate worker's global rate limiter (replication/src/limits.rs): one row per
-- remote registry holding the GCRA's theoretical arrival time, advanced atomically by
-- one upsert per request from every worker process. Created on first use; the row goes
-- with its registry.

CREATE TABLE registry_rate (
    registry_id  BIGINT PRIMARY KEY REFERENCES registries (id) ON DELETE CASCADE,
    -- When the bucket would be empty again: a request may go at
    -- tat - burst × emission interval (see limits.rs).
    tat          TIMESTAMPTZ NOT NULL
);
