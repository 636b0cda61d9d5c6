-- The nodes of a cluster sharing this database (SQLite: one node).
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    -- Which process holds the id now: a second process with the same id refuses to start.
    instance TEXT NOT NULL,
    advertise_url TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Sessions this node may own at most; NULL is unlimited.
    max_sessions BIGINT,
    -- A draining node serves API calls but owns no session.
    draining BOOLEAN NOT NULL DEFAULT FALSE,
    -- Set by a graceful stop: the node is gone, not dead.
    stopped_at BIGINT
);

-- One row per session that should run somewhere. `owner` runs it until `expires_at`
-- (milliseconds of the database clock); `epoch` grows with every new owner and fences
-- every write the session makes to shared state.
CREATE TABLE session_leases (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    owner TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL DEFAULT 0,
    acquired_at BIGINT
);
CREATE INDEX session_leases_owner ON session_leases (owner, expires_at);
CREATE INDEX session_leases_expiry ON session_leases (expires_at);

-- Every linked session runs, as a start restored them before leases existed.
INSERT INTO session_leases (device_id)
SELECT id FROM devices
WHERE wa_jid IS NOT NULL AND state NOT IN ('logged_out', 'replaced', 'deleted');
