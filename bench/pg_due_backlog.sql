-- The promotion of due jobs before and after schema version 6, on the plan PostgreSQL makes
-- for Weir's connections (generic, sequential scans off), with a million due jobs of two
-- queues that nobody fetches and ten of a queue "c" that is fetched.
-- Run: psql -h 127.0.0.1 -U postgres test -f bench/pg_due_backlog.sql
-- The table has the columns the statements read; the statements are Weir's, before (one
-- index by due time, random_page_cost 4) and after (by queue then due time, 1.1).
\set QUIET on
DROP SCHEMA IF EXISTS bench_due CASCADE;
CREATE SCHEMA bench_due;
CREATE TABLE bench_due.jobs (id bigint PRIMARY KEY, queue text COLLATE "C" NOT NULL,
    state smallint NOT NULL, run_at bigint NOT NULL, grp text, pad text);
INSERT INTO bench_due.jobs
  SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 0,
         1000000 + (g::bigint * 7919) % 1000000, NULL, repeat('x', 200)
  FROM generate_series(1, 1000000) g;
INSERT INTO bench_due.jobs
  SELECT 2000000 + g, 'c', 0, 1999990 + g, NULL, 'x' FROM generate_series(1, 10) g;
CREATE INDEX jobs_due ON bench_due.jobs (run_at) WHERE state IN (0, 4);
CREATE INDEX jobs_due_by_queue ON bench_due.jobs (queue, run_at) WHERE state IN (0, 4);
VACUUM ANALYZE bench_due.jobs;
SET enable_seqscan TO off;
SET plan_cache_mode = force_generic_plan;
\set QUIET off
\echo '== before (version 5): queue c, then a'
SET random_page_cost = 4;
PREPARE old(bigint, text[]) AS SELECT id FROM bench_due.jobs WHERE state IN (0, 4)
  AND run_at <= $1 AND queue = ANY($2) AND grp IS NULL ORDER BY run_at LIMIT 5000
  FOR UPDATE SKIP LOCKED;
BEGIN;
EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) EXECUTE old(3000000, '{c}');
EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) EXECUTE old(3000000, '{a}');
ROLLBACK;
\echo '== after (version 6): queue c, then a'
SET random_page_cost = 1.1;
PREPARE new(bigint, text[]) AS SELECT d.id FROM unnest($2::text[]) AS n(name)
  CROSS JOIN LATERAL (SELECT id FROM bench_due.jobs WHERE queue = n.name
    AND state IN (0, 4) AND run_at <= $1 AND grp IS NULL ORDER BY run_at LIMIT 5000
    FOR UPDATE SKIP LOCKED) d LIMIT 5000;
BEGIN;
EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) EXECUTE new(3000000, '{c}');
EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) EXECUTE new(3000000, '{a}');
ROLLBACK;
DROP SCHEMA bench_due CASCADE;
