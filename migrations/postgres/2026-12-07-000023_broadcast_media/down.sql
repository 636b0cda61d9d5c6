DROP TABLE number_checks;
DROP INDEX broadcast_media_by_media;
DROP TABLE broadcast_media;
