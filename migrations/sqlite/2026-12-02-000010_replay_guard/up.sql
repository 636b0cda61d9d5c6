-- Per-project opt-in: a signature already seen within the signing window is refused.
ALTER TABLE projects ADD COLUMN refuse_replays BOOLEAN NOT NULL DEFAULT 0;
-- Signatures seen, kept until their timestamp leaves the window (shared by every node).
CREATE TABLE seen_signatures (
    project_id TEXT NOT NULL,
    signature_hash TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, signature_hash)
);
CREATE INDEX seen_signatures_expiry ON seen_signatures (expires_at);
