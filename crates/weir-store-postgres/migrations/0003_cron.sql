-- Version 3: cron entries. The definition as the API took it (JSON text the server parses)
-- and the last tick handled; servers move `last_tick_ms` by compare and set, so each tick is
-- taken by one server.
CREATE TABLE {s}.cron (
    name          text   COLLATE "C" PRIMARY KEY,
    spec          text   NOT NULL,
    last_tick_ms  bigint NOT NULL,
    updated_at_ms bigint NOT NULL
);
