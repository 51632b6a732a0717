-- Version 5 (PostgreSQL): the order sessions were opened in. created_at has whole seconds, so
-- among sessions opened in the same second the per-account limit could end one opened moments
-- ago instead of the oldest (a job's fresh session, cut by its own next login). SQLite orders
-- them by rowid; here a sequence numbers them as they are inserted. The sessions open now are
-- numbered in no particular order.
ALTER TABLE sessions ADD COLUMN seq BIGSERIAL;
