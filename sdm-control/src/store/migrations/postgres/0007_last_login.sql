-- Version 7 (PostgreSQL): an account's last login (its newest session, open or ended), as the
-- admin account list shows it, read from an index; the same as SQLite's migration 8.

CREATE INDEX sessions_by_account ON sessions (account_id, created_at);
