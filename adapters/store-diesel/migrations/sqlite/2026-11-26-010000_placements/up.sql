-- Placements: jobs asked for "any machine that fits" that wait, unbound,
-- until one does. `request` is JSON (fit, setup, entries, session); the
-- job a placement becomes keeps its id.
CREATE TABLE placements (
    -- Waiting order: AUTOINCREMENT never hands out a number twice.
    seq         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL CONSTRAINT placements_id_key UNIQUE,
    owner_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state       TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    -- No foreign key: a placement keeps the id of the machine it got.
    machine_id  TEXT,
    error       TEXT,
    created_at  BIGINT  NOT NULL,
    finished_at BIGINT
);
CREATE INDEX placements_state ON placements (state, seq);
