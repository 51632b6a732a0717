-- sdm control plane schema, version 1 (PostgreSQL): the same tables, constraints and
-- revocation triggers as SQLite's migrations 1 to 3, in PostgreSQL's types.
-- Times are Unix seconds (BIGINT). Names sort byte-wise (COLLATE "C") as they do in SQLite,
-- whatever the database's collation.

CREATE TABLE accounts (
    id          UUID PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('service', 'admin')),
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE tokens (
    id           UUID PRIMARY KEY,
    account_id   UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    secret_hash  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX tokens_by_account ON tokens (account_id);

CREATE TABLE resources (
    id               UUID PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    port             INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    port_override    INTEGER CHECK (port_override BETWEEN 1 AND 65535),
    tags             JSONB NOT NULL DEFAULT '{}',
    username         TEXT,
    database         TEXT,
    password_sealed  BYTEA,
    created_at       BIGINT NOT NULL,
    tls_mode         TEXT NOT NULL DEFAULT 'disable'
                     CHECK (tls_mode IN ('disable', 'require', 'verify-full')),
    tls_ca_pem       TEXT
);

CREATE TABLE grants (
    account_id   UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    resource_id  UUID NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, resource_id)
);
CREATE INDEX grants_by_resource ON grants (resource_id);

-- Sessions outlive their account (audit), so no foreign key: deleting an account ends them.
CREATE TABLE sessions (
    id          UUID PRIMARY KEY,
    account_id  UUID NOT NULL,
    labels      JSONB NOT NULL DEFAULT '{}',
    client      TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    ended_at    BIGINT
);
CREATE INDEX open_sessions_by_account ON sessions (account_id) WHERE ended_at IS NULL;

CREATE TABLE gateways (
    id           UUID PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    address      TEXT NOT NULL,
    server_name  TEXT NOT NULL,
    last_seen    BIGINT NOT NULL
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);

-- One row per connection through a gateway. Names are copied so that the trail survives the
-- deletion of accounts and resources (no foreign keys on purpose).
CREATE TABLE audit_connections (
    id             UUID PRIMARY KEY,
    account_id     UUID NOT NULL,
    account_name   TEXT NOT NULL,
    resource_id    UUID NOT NULL,
    resource_name  TEXT NOT NULL,
    gateway        TEXT NOT NULL,
    session_id     UUID NOT NULL,
    lease_id       UUID NOT NULL,
    labels         JSONB NOT NULL DEFAULT '{}',
    client_addr    TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    ended_at       BIGINT,
    bytes_up       BIGINT NOT NULL DEFAULT 0,
    bytes_down     BIGINT NOT NULL DEFAULT 0,
    outcome        TEXT NOT NULL,
    error          TEXT,
    query_count    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX audit_by_time ON audit_connections (started_at, id);
CREATE INDEX audit_by_account ON audit_connections (account_id, started_at);
CREATE INDEX audit_by_resource ON audit_connections (resource_id, started_at);

CREATE TABLE audit_queries (
    connection_id  UUID NOT NULL,
    seq            BIGINT NOT NULL,
    at             BIGINT NOT NULL,
    text           TEXT NOT NULL,
    PRIMARY KEY (connection_id, seq)
);

-- A counter that moves whenever access is taken away, so that gateways (in this process or
-- others sharing the database) notice with one cheap read and re-check the connections they
-- carry. Row triggers keep it right whatever code path makes the change, on exactly the events
-- of SQLite's migration 3 (cascaded deletes of grants fire too, as in SQLite).

CREATE TABLE revocation_epoch (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL
);
INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);

CREATE FUNCTION sdm_bump_revocation_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER revoke_on_status AFTER UPDATE OF status ON accounts
FOR EACH ROW WHEN (NEW.status <> OLD.status)
EXECUTE FUNCTION sdm_bump_revocation_epoch();

CREATE TRIGGER revoke_on_account_delete AFTER DELETE ON accounts
FOR EACH ROW EXECUTE FUNCTION sdm_bump_revocation_epoch();

CREATE TRIGGER revoke_on_token_revoke AFTER UPDATE OF revoked_at ON tokens
FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
EXECUTE FUNCTION sdm_bump_revocation_epoch();

CREATE TRIGGER revoke_on_grant_delete AFTER DELETE ON grants
FOR EACH ROW EXECUTE FUNCTION sdm_bump_revocation_epoch();

CREATE TRIGGER revoke_on_resource_delete AFTER DELETE ON resources
FOR EACH ROW EXECUTE FUNCTION sdm_bump_revocation_epoch();

CREATE TRIGGER revoke_on_session_end AFTER UPDATE OF ended_at ON sessions
FOR EACH ROW WHEN (OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL)
EXECUTE FUNCTION sdm_bump_revocation_epoch();
