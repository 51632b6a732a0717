-- sdm control plane schema, version 9 (SQLite): how the gateway logs in to an ssh resource.
-- The login private key is the resource's sealed secret, in `password_sealed` (one sealed secret
-- per resource, whatever its kind: backups, restores and key checks already carry it).
-- `ssh_certificate_authority`: log in with a certificate from sdm's SSH CA made for each
-- connection instead of a stored key; `ssh_host_key`: the upstream server's host key
-- (`ssh-ed25519 AAAA…`), given by an admin or recorded on the first connection.

ALTER TABLE resources ADD COLUMN ssh_certificate_authority INTEGER NOT NULL DEFAULT 0
    CHECK (ssh_certificate_authority IN (0, 1));
ALTER TABLE resources ADD COLUMN ssh_host_key TEXT;
