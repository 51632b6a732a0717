-- sdm control plane schema, version 3 (SQLite): a counter that moves whenever access is taken
-- away, so that gateways (in this process or others sharing the database) notice with one cheap
-- read and re-check the connections they carry. Triggers keep it right whatever code path
-- makes the change.

CREATE TABLE revocation_epoch (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  INTEGER NOT NULL
);
INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);

CREATE TRIGGER revoke_on_status AFTER UPDATE OF status ON accounts
WHEN NEW.status <> OLD.status
BEGIN UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1; END;

CREATE TRIGGER revoke_on_account_delete AFTER DELETE ON accounts
BEGIN UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1; END;

CREATE TRIGGER revoke_on_token_revoke AFTER UPDATE OF revoked_at ON tokens
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1; END;

CREATE TRIGGER revoke_on_grant_delete AFTER DELETE ON grants
BEGIN UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1; END;

CREATE TRIGGER revoke_on_resource_delete AFTER DELETE ON resources
BEGIN UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1; END;

CREATE TRIGGER revoke_on_session_end AFTER UPDATE OF ended_at ON sessions
WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
BEGIN UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1; END;
