-- sdm control plane schema, version 7 (SQLite): port overrides. A resource's port_override is
-- either given by an admin or assigned from the range of the port-overrides setting
-- (settings key org.port_overrides); port_assigned tells which, so that a new range or a
-- regeneration moves only assigned ports. Uniqueness of local ports is kept by the store's
-- transactions, not an index, so that databases that already hold a shared port still open.

ALTER TABLE resources ADD COLUMN port_assigned INTEGER NOT NULL DEFAULT 0;
CREATE INDEX resources_by_port_override ON resources (port_override)
    WHERE port_override IS NOT NULL;
