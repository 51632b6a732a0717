-- Version 2 (PostgreSQL): changing a resource also moves the revocation epoch, as SQLite's
-- migration 4. A change of address, credentials or pinning tags can take access away from
-- connections a gateway carries and makes answers a gateway remembered stale.

CREATE TRIGGER revoke_on_resource_update AFTER UPDATE ON resources
FOR EACH ROW EXECUTE FUNCTION sdm_bump_revocation_epoch();
