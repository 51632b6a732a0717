-- sdm control plane schema, version 2 (SQLite): upstream TLS per resource, and the audit trail.

ALTER TABLE resources ADD COLUMN tls_mode TEXT NOT NULL DEFAULT 'disable'
    CHECK (tls_mode IN ('disable', 'require', 'verify-full'));
ALTER TABLE resources ADD COLUMN tls_ca_pem TEXT;

-- One row per connection through a gateway. Names are copied so that the trail survives the
-- deletion of accounts and resources (no foreign keys on purpose).
CREATE TABLE audit_connections (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL,
    account_name   TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    resource_name  TEXT NOT NULL,
    gateway        TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    lease_id       TEXT NOT NULL,
    labels         TEXT NOT NULL DEFAULT '{}',
    client_addr    TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    bytes_up       INTEGER NOT NULL DEFAULT 0,
    bytes_down     INTEGER NOT NULL DEFAULT 0,
    outcome        TEXT NOT NULL,
    error          TEXT,
    query_count    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX audit_by_time ON audit_connections (started_at, id);
CREATE INDEX audit_by_account ON audit_connections (account_id, started_at);
CREATE INDEX audit_by_resource ON audit_connections (resource_id, started_at);

CREATE TABLE audit_queries (
    connection_id  TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    text           TEXT NOT NULL,
    PRIMARY KEY (connection_id, seq)
) WITHOUT ROWID;
