-- sdm control plane schema, version 6 (SQLite): session lifetimes, and finding the audit
-- records a gateway or a session has open.
--
-- last_used_at: when a lease was last issued in the session (NULL: never), for idle expiry and
-- so that a session never used can be removed outright when the account's limit ends it.
-- Ended sessions are pruned after a retention period; audit records keep the session id,
-- labels and times by value, so they need no session row.

ALTER TABLE sessions ADD COLUMN last_used_at INTEGER;
-- Whether the sessions open now were used is not known: count them as used, so that the limit
-- ends them (moving the revocation epoch, which cuts their connections) rather than deleting
-- them.
UPDATE sessions SET last_used_at = created_at WHERE ended_at IS NULL;

-- The account's open sessions, oldest first (the per-account limit ends the oldest).
DROP INDEX open_sessions_by_account;
CREATE INDEX open_sessions_by_account ON sessions (account_id, created_at)
    WHERE ended_at IS NULL;
CREATE INDEX ended_sessions ON sessions (ended_at) WHERE ended_at IS NOT NULL;

-- Open connections, by gateway (closed as interrupted when it restarts) and by session (an
-- idle session with an open connection is not idle).
CREATE INDEX open_connections_by_gateway ON audit_connections (gateway)
    WHERE ended_at IS NULL;
CREATE INDEX open_connections_by_session ON audit_connections (session_id)
    WHERE ended_at IS NULL;
