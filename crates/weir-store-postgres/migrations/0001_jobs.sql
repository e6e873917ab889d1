-- Weir's PostgreSQL schema, version 1. `{s}` is the schema (quoted) this deployment uses.
-- Times are ms since the epoch (bigint), taken from the server's clock and passed in: SQL
-- never reads now(), so every server and every test agrees on what time it is. Names and
-- keys compare byte-wise (COLLATE "C"): every index leads with the queue, and a
-- locale-aware comparison there cost a fifth of the throughput.

-- Queues: the configuration as JSON (what the API reads) and, beside it, the settings that
-- SQL itself needs to order, retry and finish jobs (`delete_at_ack`: retention keeps no
-- completed job; `has_breaker`: acks feed a circuit breaker). `flow` is the shared
-- flow-control state (rate limiter, breaker) as the engine's `SharedFlow` serialises it.
CREATE TABLE {s}.queues (
    name             text COLLATE "C" PRIMARY KEY,
    config           jsonb   NOT NULL,
    aging_ms         bigint  NOT NULL,
    smallest_cost    boolean NOT NULL,
    group_limit      integer NOT NULL,
    backoff_base_ms  bigint  NOT NULL,
    backoff_cap_ms   bigint  NOT NULL,
    delete_at_ack    boolean NOT NULL,
    has_breaker      boolean NOT NULL,
    flow             jsonb
);

-- Jobs. States: 0 scheduled, 1 waiting, 2 active, 3 completed, 4 failed (awaiting retry),
-- 5 dead, 6 cancelled. `avail` is true for a waiting job its group does not hold back;
-- `rank` and `sort_cost` are the ready order (rank = floor(run_at / aging_ms) - priority).
CREATE SEQUENCE {s}.jobs_id_seq;
CREATE TABLE {s}.jobs (
    id              bigint   PRIMARY KEY,
    queue           text     COLLATE "C" NOT NULL,
    kind            text     NOT NULL,
    payload         text     NOT NULL,
    state           smallint NOT NULL,
    avail           boolean  NOT NULL,
    priority        integer  NOT NULL,
    cost            bigint   NOT NULL,
    rank            bigint   NOT NULL,
    sort_cost       bigint   NOT NULL,
    attempt         integer  NOT NULL DEFAULT 0,
    max_attempts    integer  NOT NULL,
    backoff_base_ms bigint,
    backoff_cap_ms  bigint,
    timeout_ms      bigint   NOT NULL,
    created_at      bigint   NOT NULL,
    run_at          bigint   NOT NULL,
    started_at      bigint,
    finished_at     bigint,
    lease_id        bigint   NOT NULL DEFAULT 0,
    lease_deadline  bigint   NOT NULL DEFAULT 0,
    unique_key      text     COLLATE "C",
    unique_until    bigint   NOT NULL DEFAULT 0,
    grp             text     COLLATE "C",
    tags            text[]   NOT NULL DEFAULT '{}',
    progress        text,
    result          text,
    errors          jsonb    NOT NULL DEFAULT '[]'
);
-- The hot index: only jobs a fetch may take, in the order it takes them.
CREATE INDEX jobs_ready ON {s}.jobs (queue, rank, sort_cost, id) WHERE state = 1 AND avail;
-- Scheduled and failed jobs by due time, kept out of the hot index.
CREATE INDEX jobs_due ON {s}.jobs (run_at) WHERE state IN (0, 4);
-- The active jobs of a queue (concurrency limits) by lease deadline (rescue). Active jobs
-- are bounded by the workers, so a rescue over every queue scans little.
CREATE INDEX jobs_leases ON {s}.jobs (queue, lease_deadline) WHERE state = 2;
-- The oldest waiting job of a queue (its age, starvation).
CREATE INDEX jobs_waiting_since ON {s}.jobs (queue, run_at) WHERE state = 1;
-- Listing and counting by queue and state.
CREATE INDEX jobs_queue_state ON {s}.jobs (queue, state, id);
-- Retention: finished jobs by finish time.
CREATE INDEX jobs_finished ON {s}.jobs (queue, state, finished_at, id) WHERE state IN (3, 5, 6);
-- The unfinished jobs of each group, in enqueue order.
CREATE INDEX jobs_group ON {s}.jobs (queue, grp, id) WHERE grp IS NOT NULL AND state IN (0, 1, 2, 4);

-- Unique keys: the job a key points at, and until when it deduplicates (the largest bigint
-- while that job is unfinished, its unique window's end after).
CREATE TABLE {s}.unique_keys (
    queue      text   COLLATE "C" NOT NULL,
    key        text   COLLATE "C" NOT NULL,
    job_id     bigint NOT NULL,
    live_until bigint NOT NULL,
    PRIMARY KEY (queue, key)
);

-- Hourly aggregates, which outlive the jobs they count.
CREATE TABLE {s}.aggregates (
    queue       text   COLLATE "C" NOT NULL,
    hour_ms     bigint NOT NULL,
    enqueued    bigint NOT NULL DEFAULT 0,
    started     bigint NOT NULL DEFAULT 0,
    completed   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    expired     bigint NOT NULL DEFAULT 0,
    dead        bigint NOT NULL DEFAULT 0,
    cancelled   bigint NOT NULL DEFAULT 0,
    run_ms_sum  bigint NOT NULL DEFAULT 0,
    run_ms_max  bigint NOT NULL DEFAULT 0,
    wait_ms_sum bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, hour_ms)
);

-- The maintenance leader: one row per role, held until `expires_at`, with a fencing term
-- that grows with every change of holder.
CREATE UNLOGGED TABLE {s}.leader (
    role       text   PRIMARY KEY,
    holder     text   NOT NULL,
    term       bigint NOT NULL,
    expires_at bigint NOT NULL
);

-- Re-derives which waiting jobs of one group may start (invariant 2 of the engine): with a
-- limit of 1, the group's lowest-id unfinished job if it waits and none of the group runs;
-- above 1, its lowest-id waiting jobs, as many as the limit less its running ones. Callers
-- serialise on the group through a transaction-scoped advisory lock, taken here; each
-- statement then sees every change committed before it.
CREATE FUNCTION {s}.refresh_group(q text, g text, lim integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    running integer;
    want bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('{s}' || q || chr(31) || g, 0));
    SELECT count(*) INTO running FROM {s}.jobs j
     WHERE j.queue = q AND j.grp = g AND j.state = 2;
    IF lim <= 1 THEN
        IF running = 0 THEN
            SELECT array_agg(h.id) INTO want FROM (
                SELECT j.id, j.state FROM {s}.jobs j
                 WHERE j.queue = q AND j.grp = g AND j.state IN (0, 1, 2, 4)
                 ORDER BY j.id LIMIT 1) h
             WHERE h.state = 1;
        END IF;
    ELSE
        SELECT array_agg(w.id) INTO want FROM (
            SELECT j.id FROM {s}.jobs j
             WHERE j.queue = q AND j.grp = g AND j.state = 1
             ORDER BY j.id LIMIT greatest(lim - running, 0)) w;
    END IF;
    want := coalesce(want, '{}'::bigint[]);
    UPDATE {s}.jobs j SET avail = (j.id = ANY (want))
     WHERE j.queue = q AND j.grp = g AND j.state = 1 AND j.avail <> (j.id = ANY (want));
END
$$;
