-- Remote registries (Harbor's "registry endpoints"): what replication pushes to and
-- pulls from. Managed by system administrators through /api/v2.0/registries.

CREATE TABLE registries (
    id                     BIGSERIAL PRIMARY KEY,
    -- Unique, at most 64 characters (Harbor's rules; checked by the API).
    name                   TEXT COLLATE "C" NOT NULL,
    description            TEXT NOT NULL DEFAULT '',
    -- Harbor's adapter type. Adding one is a migration that widens this check.
    type                   TEXT NOT NULL
                           CHECK (type IN ('docker-registry', 'harbor', 'docker-hub')),
    -- Normalised: scheme://host[:port][/path], no trailing slash, no credentials.
    url                    TEXT NOT NULL,
    -- Accept any TLS certificate (self-signed peers).
    insecure               BOOLEAN NOT NULL DEFAULT false,
    credential_type        TEXT NOT NULL DEFAULT 'basic' CHECK (credential_type IN ('basic')),
    -- The user name; '' with no secret means anonymous access.
    access_key             TEXT NOT NULL DEFAULT '',
    -- The password or token, sealed with the installation's secret key
    -- (XChaCha20-Poly1305, nonce || ciphertext; see access/src/secrets.rs). NULL: none.
    -- Never returned by the API.
    access_secret          BYTEA,
    -- The outcome of the last ping (on create, update, or POST /registries/ping by id).
    status                 TEXT NOT NULL DEFAULT 'unknown'
                           CHECK (status IN ('healthy', 'unhealthy', 'unknown')),
    -- Berth: limits every worker process honours together when talking to this
    -- registry. Requests per second (0: unlimited) with a burst (0: one second's worth),
    -- and requests in flight (0: unlimited).
    rate_limit_per_second  DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (rate_limit_per_second >= 0),
    rate_limit_burst       INTEGER NOT NULL DEFAULT 0 CHECK (rate_limit_burst >= 0),
    max_concurrency        INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrency >= 0),
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT registries_name_key UNIQUE (name)
);
