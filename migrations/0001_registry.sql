-- The registry's content metadata: what exists, where it is referenced from.
-- Blob bytes live in blob storage; a blob is visible only once its row exists here.

CREATE TABLE repositories (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per verified blob in storage, whatever repositories it belongs to.
CREATE TABLE blobs (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL CHECK (size >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which repositories may serve a blob: pushes and mounts link, DELETE unlinks.
CREATE TABLE repository_blobs (
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    blob_digest    TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, blob_digest)
);
CREATE INDEX repository_blobs_by_blob ON repository_blobs (blob_digest);

-- Manifests are stored byte for byte; their digest is of exactly these bytes.
CREATE TABLE manifests (
    id              BIGSERIAL PRIMARY KEY,
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest          TEXT COLLATE "C" NOT NULL,
    media_type      TEXT NOT NULL,
    -- artifactType, or the config media type: what the referrers API reports.
    artifact_type   TEXT,
    subject_digest  TEXT COLLATE "C",
    annotations     JSONB,
    size            BIGINT NOT NULL,
    content         BYTEA NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repository_id, subject_digest)
    WHERE subject_digest IS NOT NULL;

-- manifest → blob references (config and layers).
CREATE TABLE manifest_blobs (
    manifest_id  BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    blob_digest  TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    PRIMARY KEY (manifest_id, blob_digest)
);
CREATE INDEX manifest_blobs_by_blob ON manifest_blobs (blob_digest);

-- index → manifest references. A child cannot be deleted while an index needs it.
CREATE TABLE manifest_children (
    parent_id  BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    child_id   BIGINT NOT NULL REFERENCES manifests (id) ON DELETE RESTRICT,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX manifest_children_by_child ON manifest_children (child_id);

CREATE TABLE tags (
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name           TEXT COLLATE "C" NOT NULL,
    manifest_id    BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX tags_by_manifest ON tags (manifest_id);

-- Upload sessions survive restarts: the bytes are in storage, the accepted length here.
CREATE TABLE upload_sessions (
    id             UUID PRIMARY KEY,
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    size           BIGINT NOT NULL DEFAULT 0 CHECK (size >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX upload_sessions_by_age ON upload_sessions (updated_at);
