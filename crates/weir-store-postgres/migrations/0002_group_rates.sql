-- Version 2: per-key rate limits. One GCRA arrival time per (queue, group key), locked by
-- the fetch that hands out the key's jobs; rows whose time has passed equal fresh ones and
-- are deleted by maintenance.
CREATE TABLE {s}.group_rates (
    queue  text   COLLATE "C" NOT NULL,
    grp    text   COLLATE "C" NOT NULL,
    tat_us bigint NOT NULL,
    PRIMARY KEY (queue, grp)
);
