-- sdm control plane schema, version 11 (SQLite): audited statements kept in blocks.
-- `audit_query_blocks`: a run of one connection's statements per row, from `first_seq` to
-- `last_seq`, front-coded by `store/sqlite/query_blocks.rs`: one row per connection
-- and batch of the audit writer instead of one per statement (a rowid table, as bodies run to
-- kilobytes). Rows written before this version stay in `audit_queries` and are read with the
-- blocks; both go with the connection's record.

CREATE TABLE audit_query_blocks (
    connection_id  TEXT NOT NULL,
    first_seq      INTEGER NOT NULL,
    last_seq       INTEGER NOT NULL,
    body           BLOB NOT NULL,
    PRIMARY KEY (connection_id, first_seq, last_seq)
);
