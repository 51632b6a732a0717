-- sdm control plane schema, version 5 (SQLite): what a PostgreSQL client may ask for through a
-- resource. `databases`: a JSON array of the databases a client may name besides the stored one;
-- `replication`: whether replication connections are let through (they read every database).

ALTER TABLE resources ADD COLUMN databases TEXT NOT NULL DEFAULT '[]';
ALTER TABLE resources ADD COLUMN replication INTEGER NOT NULL DEFAULT 0 CHECK (replication IN (0, 1));
