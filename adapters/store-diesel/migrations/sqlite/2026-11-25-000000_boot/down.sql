ALTER TABLE jobs DROP COLUMN session;
ALTER TABLE machines DROP COLUMN neutral;
ALTER TABLE machines DROP COLUMN power;
