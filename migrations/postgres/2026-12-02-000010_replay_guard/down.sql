DROP TABLE seen_signatures;
ALTER TABLE projects DROP COLUMN refuse_replays;
