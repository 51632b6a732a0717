-- Version 8 (PostgreSQL): how the gateway logs in to an ssh resource, as SQLite's migration 9.
-- The login private key is the resource's sealed secret, in `password_sealed`;
-- `ssh_certificate_authority`: log in with a per-connection certificate from sdm's SSH CA;
-- `ssh_host_key`: the upstream server's host key, given by an admin or recorded on the first
-- connection.

ALTER TABLE resources
    ADD COLUMN ssh_certificate_authority BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN ssh_host_key TEXT;
