-- Account health of sessions used by campaigns, shared by every node and kept across
-- restarts: whether a session is healthy, since when and why; since when it has been down
-- (for "disconnected for long"); and where the scan for a run of failed campaign messages
-- starts (messages.seq: everything at or before it is already judged).
CREATE TABLE session_health (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    -- healthy or unhealthy
    health TEXT NOT NULL,
    reason TEXT,
    since BIGINT NOT NULL,
    down_since BIGINT,
    scan_from BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX session_health_unhealthy ON session_health (health);

-- Why a paused campaign is paused: by its user, or by health (none of its sessions is
-- healthy; resumed by itself when one recovers).
CREATE TABLE broadcast_pauses (
    broadcast_id TEXT PRIMARY KEY REFERENCES broadcasts(id) ON DELETE CASCADE,
    -- user or health
    paused_by TEXT NOT NULL,
    reason TEXT,
    since BIGINT NOT NULL
);
