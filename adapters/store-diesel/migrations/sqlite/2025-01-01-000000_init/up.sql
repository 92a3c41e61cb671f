-- The BAAS metadata store and boot queue, SQLite flavour.
-- Keep in step with ../../postgres/2025-01-01-000000_init/up.sql and
-- src/schema.rs. Ids are hyphenated UUID text, times are milliseconds since
-- the Unix epoch, enums are their lower-case names. `seq` columns exist to
-- give rows inserted at the same millisecond a stable order.

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL CONSTRAINT users_name_key UNIQUE,
    display_name  TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    password_hash TEXT,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE tokens (
    seq         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL CONSTRAINT tokens_id_key UNIQUE,
    -- A token authenticates a user or one machine's agent, never both.
    user_id     TEXT    REFERENCES users (id) ON DELETE CASCADE,
    machine_id  TEXT    REFERENCES machines (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    secret_hash BLOB    NOT NULL CONSTRAINT tokens_secret_hash_key UNIQUE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    CHECK ((user_id IS NULL) <> (machine_id IS NULL))
);
CREATE INDEX tokens_user ON tokens (user_id, created_at, seq);

CREATE TABLE images (
    seq          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL CONSTRAINT images_id_key UNIQUE,
    owner_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    disk         TEXT    NOT NULL,
    size         BIGINT  NOT NULL,
    metadata     TEXT    NOT NULL,
    visibility   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    -- The number the next committed version gets; only ever grows, so
    -- numbers are never reused, even after the latest version is deleted.
    next_version BIGINT  NOT NULL
);
CREATE INDEX images_owner ON images (owner_id);
CREATE INDEX images_created ON images (created_at, seq);

CREATE TABLE image_shares (
    image_id TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    user_id  TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX image_shares_user ON image_shares (user_id);

CREATE TABLE versions (
    image_id    TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    number      BIGINT  NOT NULL,
    size        BIGINT  NOT NULL,
    root        BLOB    NOT NULL,
    data_chunks BIGINT  NOT NULL,
    added_bytes BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    source      TEXT    NOT NULL,
    source_job  TEXT,
    note        TEXT,
    manifest    BLOB    NOT NULL,
    PRIMARY KEY (image_id, number)
);

CREATE TABLE uploads (
    id          TEXT    NOT NULL PRIMARY KEY,
    image_id    TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    created_by  TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    manifest    BLOB,
    source      TEXT    NOT NULL,
    source_job  TEXT,
    started_at  BIGINT  NOT NULL,
    last_active BIGINT  NOT NULL,
    added_bytes BIGINT  NOT NULL
);
CREATE INDEX uploads_image ON uploads (image_id);
CREATE INDEX uploads_created_by ON uploads (created_by);
CREATE INDEX uploads_last_active ON uploads (last_active);

CREATE TABLE setups (
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL CONSTRAINT setups_id_key UNIQUE,
    owner_id   TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE INDEX setups_owner ON setups (owner_id, created_at, seq);
CREATE INDEX setups_created ON setups (created_at, seq);

CREATE TABLE setup_entries (
    setup_id TEXT    NOT NULL REFERENCES setups (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    image_id TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    version  TEXT    NOT NULL,
    disk     TEXT,
    capture  BOOLEAN NOT NULL,
    PRIMARY KEY (setup_id, position)
);
CREATE INDEX setup_entries_image ON setup_entries (image_id);

CREATE TABLE machines (
    id         TEXT   NOT NULL PRIMARY KEY,
    mac        TEXT   NOT NULL CONSTRAINT machines_mac_key UNIQUE,
    name       TEXT   NOT NULL CONSTRAINT machines_name_key UNIQUE,
    arch       TEXT   NOT NULL,
    pool       TEXT,
    state      TEXT   NOT NULL,
    inventory  TEXT,
    last_seen  BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE jobs (
    -- Queue order: AUTOINCREMENT never hands out a number twice.
    seq            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL CONSTRAINT jobs_id_key UNIQUE,
    machine_id     TEXT    NOT NULL REFERENCES machines (id),
    owner_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- No foreign key: a job keeps the id of the setup it came from.
    setup_id       TEXT,
    state          TEXT    NOT NULL,
    progress_phase TEXT    NOT NULL,
    progress_done  BIGINT  NOT NULL,
    progress_total BIGINT  NOT NULL,
    progress_rate  BIGINT  NOT NULL,
    error          TEXT,
    created_at     BIGINT  NOT NULL,
    started_at     BIGINT,
    finished_at    BIGINT
);
CREATE INDEX jobs_machine_state ON jobs (machine_id, state, seq);
CREATE INDEX jobs_owner ON jobs (owner_id, seq);
CREATE INDEX jobs_state ON jobs (state, seq);
-- At most one active job per machine, whatever the code above does.
CREATE UNIQUE INDEX jobs_one_active_per_machine ON jobs (machine_id)
    WHERE state IN ('provisioning', 'running', 'capturing');

CREATE TABLE job_entries (
    job_id   TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    -- No foreign keys: finished jobs keep naming what they wrote.
    image_id TEXT    NOT NULL,
    version  BIGINT  NOT NULL,
    disk     TEXT    NOT NULL,
    capture  BOOLEAN NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE INDEX job_entries_image ON job_entries (image_id, version);

CREATE TABLE job_events (
    seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at      BIGINT  NOT NULL,
    kind    TEXT    NOT NULL,
    message TEXT    NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, seq);
