-- sdm control plane schema, version 3 (PostgreSQL): what a PostgreSQL client may ask for through
-- a resource (SQLite's version 5). `databases`: the databases a client may name besides the
-- stored one; `replication`: whether replication connections are let through.

ALTER TABLE resources
    ADD COLUMN databases JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN replication BOOLEAN NOT NULL DEFAULT false;
