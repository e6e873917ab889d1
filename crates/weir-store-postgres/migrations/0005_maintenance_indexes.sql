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

-- The waiting jobs' index keys on `queue || ''`, as `jobs_pending` does, so that only the
-- statements that say so (listings, the oldest waiting age, purge) can use it. Keyed on
-- `queue`, a lease (`queue = $1 AND state = 1 AND avail ORDER BY rank, sort_cost, id LIMIT
-- n`) planned after autovacuum had analyzed a drained queue read every waiting job of the
-- queue through it and sorted them, instead of walking `jobs_ready` in order: one server
-- fell from 33,000 to 8,500 jobs/s.
DROP INDEX {s}.jobs_waiting;
CREATE INDEX jobs_waiting ON {s}.jobs ((queue || ''), (id + 0)) INCLUDE (run_at) WHERE state = 1;
