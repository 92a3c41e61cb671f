-- A machine's own history: what happened to it outside any job (power
-- actions by moderators and admins), newest last.
CREATE TABLE machine_events (
    seq        BIGINT  NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id TEXT    NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    at         BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    message    TEXT    NOT NULL
);
CREATE INDEX machine_events_machine ON machine_events (machine_id, seq);
