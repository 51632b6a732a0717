-- sdm control plane schema, version 1 (SQLite).
-- Ids are UUIDs in their hyphenated text form; times are Unix seconds.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('service', 'admin')),
    status      TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    secret_hash  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX tokens_by_account ON tokens (account_id);

CREATE TABLE resources (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    port             INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    port_override    INTEGER CHECK (port_override BETWEEN 1 AND 65535),
    tags             TEXT NOT NULL DEFAULT '{}',
    username         TEXT,
    database         TEXT,
    password_sealed  BLOB,
    created_at       INTEGER NOT NULL
);

CREATE TABLE grants (
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    resource_id  TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (account_id, resource_id)
);
CREATE INDEX grants_by_resource ON grants (resource_id);

-- Sessions outlive their account (audit), so no foreign key: deleting an account ends them.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    labels      TEXT NOT NULL DEFAULT '{}',
    client      TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    ended_at    INTEGER
);
CREATE INDEX open_sessions_by_account ON sessions (account_id) WHERE ended_at IS NULL;

CREATE TABLE gateways (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    address      TEXT NOT NULL,
    server_name  TEXT NOT NULL,
    last_seen    INTEGER NOT NULL
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
