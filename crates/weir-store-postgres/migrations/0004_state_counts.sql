-- Version 4: counts by state kept beside the jobs, and no index that lists every job.
--
-- `jobs_queue_state (queue, state, id)` held every job: each enqueue and each lease wrote an
-- entry to it (two of the seven index entries of a job's life), and counting a queue's jobs
-- by state still read all of them. Counts now live in `state_counts`, written by statement
-- triggers in the transaction that changes the jobs (so they cannot drift from them), one
-- row per (queue, state, backend): a backend only ever updates its own rows, so no two
-- transactions wait for one counter. The maintenance leader folds the rows of backends that
-- are gone into `pid = 0` and deletes zeros. A queue's count is the sum of its rows.
--
-- Listings by queue and state use partial indexes per state instead, each of which a job
-- only enters in that state: waiting jobs by id (with their ready time, for the oldest
-- waiting age), scheduled and failed ones by id, finished ones by id. Active jobs are
-- bounded by the workers and listed from `jobs_leases`.
CREATE TABLE {s}.state_counts (
    queue text     COLLATE "C" NOT NULL,
    state smallint NOT NULL,
    pid   integer  NOT NULL,
    n     bigint   NOT NULL,
    PRIMARY KEY (queue, state, pid)
);

CREATE FUNCTION {s}.count_states() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {s}.state_counts AS c (queue, state, pid, n)
        SELECT t.queue, t.state, pg_backend_pid(), count(*) FROM new_rows t
         GROUP BY t.queue, t.state ORDER BY t.queue, t.state
        ON CONFLICT (queue, state, pid) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {s}.state_counts AS c (queue, state, pid, n)
        SELECT t.queue, t.state, pg_backend_pid(), -count(*) FROM old_rows t
         GROUP BY t.queue, t.state ORDER BY t.queue, t.state
        ON CONFLICT (queue, state, pid) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO {s}.state_counts AS c (queue, state, pid, n)
        SELECT d.queue, d.state, pg_backend_pid(), sum(d.k) FROM (
            SELECT o.queue, o.state, -1 AS k FROM old_rows o
            UNION ALL
            SELECT w.queue, w.state, 1 AS k FROM new_rows w) d
         GROUP BY d.queue, d.state HAVING sum(d.k) <> 0 ORDER BY d.queue, d.state
        ON CONFLICT (queue, state, pid) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON {s}.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_states();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON {s}.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_states();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON {s}.jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_states();

-- The jobs as they are (the triggers above hold the table against writers from their
-- creation to this migration's commit, so nothing is counted twice or missed).
INSERT INTO {s}.state_counts (queue, state, pid, n)
SELECT queue, state, 0, count(*) FROM {s}.jobs GROUP BY queue, state;

-- The listing indexes order by `id + 0`, not `id`, and only statements that say `id + 0`
-- can use them. With a plain `id` key, a statement that finds jobs by `id = ANY(...)` and
-- re-checks their state (`AND state = 1`) could be planned as a full scan of the index of
-- that state instead of primary-key look-ups: on a table never analyzed, it was, and each
-- lease of a batch read every waiting job (one server: 28,000 -> 11,000 jobs/s).
-- The list of scheduled and failed jobs also keys on `queue || ''`: keyed on `queue`, the
-- promotion of due jobs (`queue = ANY(...) AND state IN (0, 4) AND run_at <= now ORDER BY
-- run_at`) was planned as a read of every scheduled job of the queue and a sort, instead
-- of a walk of `jobs_due` that stops at the first job not due.
CREATE INDEX jobs_waiting ON {s}.jobs (queue, (id + 0)) INCLUDE (run_at) WHERE state = 1;
CREATE INDEX jobs_pending ON {s}.jobs ((queue || ''), state, (id + 0)) WHERE state IN (0, 4);
CREATE INDEX jobs_done ON {s}.jobs (queue, state, (id + 0)) WHERE state IN (3, 5, 6);
DROP INDEX {s}.jobs_queue_state;
DROP INDEX {s}.jobs_waiting_since;
