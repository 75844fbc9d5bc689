-- Jobs: what the event pipeline's workers do, as PostgreSQL rows. An execution is one
-- trigger of a job (a manual start, an event, a schedule's due time); its tasks are
-- the units of work, each carried by one message on the jobs stream. Delivery is at
-- least once; these rows make the effects exactly once and visible.

CREATE TABLE executions (
    id              BIGSERIAL PRIMARY KEY,
    -- The worker kind that runs its tasks: echo, replicate, scan, gc.
    kind            TEXT NOT NULL,
    -- What it belongs to (a replication policy id, a schedule's owner); 0 for none.
    vendor_id       BIGINT NOT NULL DEFAULT 0,
    trigger         TEXT NOT NULL CHECK (trigger IN ('manual', 'event', 'schedule')),
    -- The trigger's identity (an event id, `schedule:<id>:<due time>`): a redelivered
    -- trigger finds its execution instead of starting a second one.
    trigger_key     TEXT,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    status_message  TEXT NOT NULL DEFAULT '',
    -- When someone asked to stop it; the status becomes `cancelled` once no task runs.
    cancel_requested_at TIMESTAMPTZ,
    extra_attrs     JSONB NOT NULL DEFAULT '{}',
    created_by      TEXT NOT NULL DEFAULT '',
    start_time      TIMESTAMPTZ NOT NULL DEFAULT now(),
    end_time        TIMESTAMPTZ,
    UNIQUE (kind, trigger_key)
);
CREATE INDEX executions_by_kind ON executions (kind, vendor_id, id DESC);
CREATE INDEX executions_unfinished ON executions (id) WHERE status IN ('pending', 'running');

CREATE TABLE tasks (
    id              BIGSERIAL PRIMARY KEY,
    execution_id    BIGINT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    -- The unit of work's own identity within its execution (`team/app@sha256:…→hub`):
    -- planning the same work twice finds the existing task.
    natural_key     TEXT NOT NULL,
    -- Where the work goes; part of the message subject.
    destination     TEXT NOT NULL DEFAULT 'default',
    -- What the handler needs, as the kind defines it.
    payload         JSONB NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')),
    status_message  TEXT NOT NULL DEFAULT '',
    -- Deliveries that started the handler: 2 after a worker died mid-task.
    attempts        INT NOT NULL DEFAULT 0,
    -- Bytes the task moved (replication), for progress and throughput.
    bytes           BIGINT NOT NULL DEFAULT 0,
    -- The worker process that ran the last attempt.
    worker_id       UUID,
    -- The task's log, bounded: older lines are dropped first.
    log             TEXT NOT NULL DEFAULT '',
    cancel_requested_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at        TIMESTAMPTZ,
    UNIQUE (execution_id, natural_key)
);
CREATE INDEX tasks_by_execution ON tasks (execution_id, id);
CREATE INDEX tasks_pending_by_kind ON tasks (kind, created_at) WHERE status = 'pending';

-- One row per worker kind whose queue someone paused; workers stop fetching it.
CREATE TABLE job_queues (
    kind        TEXT PRIMARY KEY,
    paused      BOOLEAN NOT NULL DEFAULT false,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Cron schedules: whichever worker claims a due row (FOR UPDATE SKIP LOCKED) starts
-- the execution and moves next_run_at past now, so a due time fires once however many
-- workers run, and an outage spanning several due times fires once on return.
CREATE TABLE schedules (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL,
    vendor_id    BIGINT NOT NULL DEFAULT 0,
    -- Six fields with seconds (`0 0 3 * * *`) or five (`0 3 * * *`), UTC.
    cron         TEXT NOT NULL,
    -- The payload of the task each firing starts.
    payload      JSONB NOT NULL DEFAULT '{}',
    enabled      BOOLEAN NOT NULL DEFAULT true,
    next_run_at  TIMESTAMPTZ NOT NULL,
    last_run_at  TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (kind, vendor_id)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;

-- Live worker processes (Harbor's worker pools): each registers at start and
-- heartbeats; a row whose heartbeat is older than a few intervals is a dead process.
CREATE TABLE worker_processes (
    id            UUID PRIMARY KEY,
    kind          TEXT NOT NULL,
    host          TEXT NOT NULL,
    pid           INT NOT NULL,
    concurrency   INT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The tasks running now: [{"task_id":…,"execution_id":…,"started_at":…}].
    in_flight     JSONB NOT NULL DEFAULT '[]'
);
