DROP INDEX media_unpurged;
ALTER TABLE media DROP COLUMN purged_at;
