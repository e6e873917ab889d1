-- Version 6: due jobs by queue, then due time.
--
-- `jobs_due (run_at)` held every queue's scheduled and failed jobs in one order, so the
-- promotion of one queue's due jobs (`queue = ANY(...) AND run_at <= now ORDER BY run_at
-- LIMIT 5000`) had either to walk past other queues' jobs or, as its generic plan did, to
-- read every due job and sort them for the first 5,000: a backlog of a million due jobs was
-- sorted on every fetch's tick. Keyed by queue first, each queue's due jobs are a range
-- read in order, and the statements walk it queue by queue (a LATERAL join over the queue
-- names), stopping at the first job not due or at the batch's end.
CREATE INDEX jobs_due_by_queue ON {s}.jobs (queue, run_at) WHERE state IN (0, 4);
DROP INDEX {s}.jobs_due;
