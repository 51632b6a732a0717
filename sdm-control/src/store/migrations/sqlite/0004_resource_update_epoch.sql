-- sdm control plane schema, version 4 (SQLite): changing a resource also moves the revocation
-- epoch. A change of address, credentials or pinning tags can take access away from connections
-- a gateway carries (pinned elsewhere) and makes answers a gateway remembered stale, so gateways
-- re-check their connections and forget what they remembered.

CREATE TRIGGER revoke_on_resource_update AFTER UPDATE ON resources
BEGIN UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1; END;
