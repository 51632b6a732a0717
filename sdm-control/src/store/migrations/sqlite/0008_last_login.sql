-- sdm control plane schema, version 8 (SQLite): an account's last login (its newest session,
-- open or ended), as the admin account list shows it, read from an index rather than by
-- scanning every session.

CREATE INDEX sessions_by_account ON sessions (account_id, created_at);
