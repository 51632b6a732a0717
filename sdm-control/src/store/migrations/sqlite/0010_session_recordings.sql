-- sdm control plane schema, version 10 (SQLite): recordings of terminal sessions.
-- `ssh_record_sessions`: the gateway records what an ssh resource's terminal sessions show.
-- `audit_recordings`: one asciicast v2 line per row (seq 0 is the header), per channel of an
-- audited connection; removed with the connection's record.

ALTER TABLE resources ADD COLUMN ssh_record_sessions INTEGER NOT NULL DEFAULT 0
    CHECK (ssh_record_sessions IN (0, 1));

CREATE TABLE audit_recordings (
    connection_id  TEXT NOT NULL,
    channel        INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    line           TEXT NOT NULL,
    PRIMARY KEY (connection_id, channel, seq)
) WITHOUT ROWID;
