-- Server settings an admin changes at runtime (the enrollment policy for
-- unknown machines, ...): one text value per key. A command-line flag gives
-- the first value when the key is absent.
CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
