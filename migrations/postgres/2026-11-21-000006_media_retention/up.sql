-- Media blobs are kept for a retention period; then the bytes are dropped and the row (type,
-- size, sha256) stays, so message history keeps its metadata.
ALTER TABLE media ADD COLUMN purged_at BIGINT;
CREATE INDEX media_unpurged ON media (created_at) WHERE purged_at IS NULL;
