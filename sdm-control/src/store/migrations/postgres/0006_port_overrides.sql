-- Version 6 (PostgreSQL): port overrides; the same as SQLite's migration 7. A resource's
-- port_override is either given by an admin or assigned from the range of the port-overrides
-- setting (settings key org.port_overrides); port_assigned tells which. Uniqueness of local
-- ports is kept by the store's transactions under an advisory lock, not an index, so that
-- databases that already hold a shared port still migrate.

ALTER TABLE resources ADD COLUMN port_assigned BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX resources_by_port_override ON resources (port_override)
    WHERE port_override IS NOT NULL;
