-- The boot path: a machine's power access and neutral state, a job's session
-- (JSON: hold_ms, ends_at, cycled_at; NULL when the job has none yet).
ALTER TABLE machines ADD COLUMN power TEXT;
ALTER TABLE machines ADD COLUMN neutral TEXT;
ALTER TABLE jobs ADD COLUMN session TEXT;
