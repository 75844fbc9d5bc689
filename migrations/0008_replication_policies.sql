-- Replication policies, in Harbor's model: one side is a remote registry endpoint
-- (`registries`), the other is this Berth. Push mode names the destination
-- (`dest_registry_id`), pull mode the source (`src_registry_id`); exactly one is set.
-- Harbor stores the local side as registry id 0; here it is NULL, so both columns can
-- be real foreign keys and an endpoint in use cannot be deleted from under a policy.

CREATE TABLE replication_policies (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    -- Pull mode: the remote registry copied from.
    src_registry_id BIGINT REFERENCES registries (id),
    -- Push mode: the remote registry copied to.
    dest_registry_id BIGINT REFERENCES registries (id),
    -- Where copies land (empty: the source's own name); see berth-replication's
    -- `naming` for how it combines with the replace count.
    dest_namespace  TEXT NOT NULL DEFAULT '',
    -- Harbor's flattening level: how many leading path components of the source
    -- repository `dest_namespace` replaces; negative is Harbor's legacy mode (all of
    -- them). Harbor keeps it in an int8.
    dest_namespace_replace_count INT NOT NULL DEFAULT -1
        CHECK (dest_namespace_replace_count BETWEEN -128 AND 127),
    -- NULL when the policy was created without a trigger (started by hand only, as
    -- `manual`).
    trigger_type    TEXT CHECK (trigger_type IN ('manual', 'scheduled', 'event_based')),
    -- The trigger's cron as given (Harbor's `trigger_settings.cron`); NULL when no
    -- settings were given. The schedule that fires it is a `schedules` row of kind
    -- `replicate` with vendor_id = this id, present exactly while the policy is
    -- enabled and scheduled.
    cron            TEXT,
    -- Harbor's filters as given: [{"type", "value", "decoration"?}], validated on the
    -- way in.
    filters         JSONB NOT NULL DEFAULT '[]',
    replicate_deletion BOOLEAN NOT NULL DEFAULT false,
    override        BOOLEAN NOT NULL DEFAULT false,
    -- Harbor's `speed`: the per-task bandwidth cap in kilobits per second (Harbor's
    -- throttle allows speed × 128 bytes/s); 0 is unlimited (Harbor stores a negative
    -- speed as 0).
    speed_kbps      INT NOT NULL DEFAULT 0 CHECK (speed_kbps >= 0),
    copy_by_chunk   BOOLEAN NOT NULL DEFAULT false,
    enabled         BOOLEAN NOT NULL DEFAULT false,
    creator         TEXT NOT NULL DEFAULT '',
    creation_time   TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT replication_policies_name_key UNIQUE (name),
    CONSTRAINT replication_policies_one_remote
        CHECK ((src_registry_id IS NULL) <> (dest_registry_id IS NULL))
);

-- Deleting an endpoint checks it is unused; the event handler finds the enabled
-- event-based policies on every push.
CREATE INDEX replication_policies_by_src ON replication_policies (src_registry_id)
    WHERE src_registry_id IS NOT NULL;
CREATE INDEX replication_policies_by_dest ON replication_policies (dest_registry_id)
    WHERE dest_registry_id IS NOT NULL;
CREATE INDEX replication_policies_event_based ON replication_policies (id)
    WHERE enabled AND trigger_type = 'event_based';
