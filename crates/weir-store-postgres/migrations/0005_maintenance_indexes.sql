-- Version 5: maintenance and reads that go through indexes, never a table's every row.
--
-- Unique keys: the leader deleted each key whose window had passed OR whose job was gone,
-- every ten seconds; the second half read every job (a scan of the jobs table, or of its
-- primary key, per pass). Retention now deletes a job's key in the statement that deletes
-- the job, as every other delete already released it, so the leader only deletes keys past
-- their window, found through `unique_keys_live_until`. Keys left behind by retention of
-- older versions go here, once.
DELETE FROM {s}.unique_keys u WHERE NOT EXISTS (SELECT 1 FROM {s}.jobs j WHERE j.id = u.job_id);
CREATE INDEX unique_keys_live_until ON {s}.unique_keys (live_until);

-- Every queue's aggregates over a span of hours (the dashboard's charts) read this index;
-- one queue's read the primary key.
CREATE INDEX aggregates_hour ON {s}.aggregates (hour_ms);
