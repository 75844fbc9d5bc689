-- Who may do what: projects (the first component of every repository name), local
-- users, project membership, robot accounts, and the audit log of what they did.

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    username       TEXT COLLATE "C" NOT NULL UNIQUE,
    email          TEXT NOT NULL DEFAULT '',
    realname       TEXT NOT NULL DEFAULT '',
    comment        TEXT NOT NULL DEFAULT '',
    -- Argon2id in PHC string form; never returned by any API.
    password_hash  TEXT NOT NULL,
    sysadmin       BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_unique ON users (lower(email)) WHERE email <> '';

CREATE TABLE projects (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    owner_id    BIGINT REFERENCES users (id) ON DELETE SET NULL,
    -- Anonymous pull. Kept as a column (not in `metadata`) because every pull checks it.
    public      BOOLEAN NOT NULL DEFAULT false,
    -- Harbor's other project metadata (auto_scan, severity, …): string values, as Harbor
    -- serves them.
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Repositories pushed before projects existed get a private project each.
INSERT INTO projects (name)
    SELECT DISTINCT split_part(name, '/', 1) FROM repositories
    ON CONFLICT (name) DO NOTHING;
ALTER TABLE repositories ADD COLUMN project_id BIGINT REFERENCES projects (id) ON DELETE RESTRICT;
UPDATE repositories r SET project_id = p.id FROM projects p WHERE p.name = split_part(r.name, '/', 1);
ALTER TABLE repositories ALTER COLUMN project_id SET NOT NULL;
CREATE INDEX repositories_by_project ON repositories (project_id, name);

-- Harbor's role ids: 1 project admin, 2 developer, 3 guest, 4 maintainer, 5 limited guest.
CREATE TABLE project_members (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id     SMALLINT NOT NULL CHECK (role_id BETWEEN 1 AND 5),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, user_id)
);
CREATE INDEX project_members_by_user ON project_members (user_id);

CREATE TABLE robots (
    id             BIGSERIAL PRIMARY KEY,
    -- Stored as Harbor stores it: `<project>+<name>` for project robots, `<name>` for
    -- system robots; the API shows it with the `robot$` prefix.
    name           TEXT COLLATE "C" NOT NULL UNIQUE,
    description    TEXT NOT NULL DEFAULT '',
    level          TEXT NOT NULL CHECK (level IN ('system', 'project')),
    project_id     BIGINT REFERENCES projects (id) ON DELETE CASCADE,
    -- Argon2id of the secret, which is shown once, at creation or refresh.
    secret_hash    TEXT NOT NULL,
    disabled       BOOLEAN NOT NULL DEFAULT false,
    -- Days, as given (-1: never expires).
    duration_days  BIGINT NOT NULL,
    -- NULL: never expires.
    expires_at     TIMESTAMPTZ,
    -- Harbor's v2 model: [{kind, namespace, access: [{resource, action, effect?}]}].
    permissions    JSONB NOT NULL,
    created_by     TEXT NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((level = 'project') = (project_id IS NOT NULL))
);
CREATE INDEX robots_by_project ON robots (project_id) WHERE project_id IS NOT NULL;

-- Who did what, when, from where, and whether it worked. No foreign keys: the record
-- outlives the users, projects and robots it names.
CREATE TABLE audit_logs (
    id             BIGSERIAL PRIMARY KEY,
    op_time        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- `anonymous` when nobody authenticated; robots as `robot$…`.
    username       TEXT NOT NULL,
    -- create, update, delete, pull, push, login_failed, …
    operation      TEXT NOT NULL,
    -- project, repository, artifact, tag, member, robot, user, …
    resource_type  TEXT NOT NULL,
    -- e.g. `team-a/app:1.0`, `team-a/app@sha256:…`, `team-a`, `robot$team-a+ci`.
    resource       TEXT NOT NULL,
    project_id     BIGINT,
    client_addr    TEXT NOT NULL DEFAULT '',
    outcome        TEXT NOT NULL DEFAULT 'success' CHECK (outcome IN ('success', 'failure'))
);
CREATE INDEX audit_logs_by_time ON audit_logs (op_time);
CREATE INDEX audit_logs_by_project ON audit_logs (project_id, op_time);
