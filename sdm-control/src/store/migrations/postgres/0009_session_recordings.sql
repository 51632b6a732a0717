-- Version 9 (PostgreSQL): recordings of terminal sessions, as SQLite's migration 10.
-- `ssh_record_sessions`: the gateway records what an ssh resource's terminal sessions show;
-- `audit_recordings`: one asciicast v2 line per row (seq 0 is the header), per channel of an
-- audited connection; removed with the connection's record.

ALTER TABLE resources
    ADD COLUMN ssh_record_sessions BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE audit_recordings (
    connection_id  UUID NOT NULL,
    channel        BIGINT NOT NULL,
    seq            BIGINT NOT NULL,
    line           TEXT NOT NULL,
    PRIMARY KEY (connection_id, channel, seq)
);
