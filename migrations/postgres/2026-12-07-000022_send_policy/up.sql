-- A project's send policy (pacing of its sessions): absent, the gateway's defaults apply.
-- Campaigns may override the gap and the daily cap; the rest is the project's.
CREATE TABLE send_policies (
    project_id TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    -- A random gap in [min_gap_ms, max_gap_ms] between two paced messages of a session.
    min_gap_ms BIGINT NOT NULL,
    max_gap_ms BIGINT NOT NULL,
    -- Paced messages per session and local day (0: no cap).
    daily_cap BIGINT NOT NULL,
    -- Messages to numbers the session never talked with, per session and local day (0: none).
    new_contact_cap BIGINT NOT NULL,
    -- A session linked less than warmup_days ago gets warmup_start_pct % of the caps on its
    -- first day, rising evenly to 100 %.
    warmup_days INTEGER NOT NULL,
    warmup_start_pct INTEGER NOT NULL,
    -- Nothing paced goes out from quiet_start_min to quiet_end_min (minutes after local
    -- midnight; both NULL: no quiet hours). Local time is UTC + utc_offset_min.
    quiet_start_min INTEGER,
    quiet_end_min INTEGER,
    utc_offset_min INTEGER NOT NULL,
    -- A typing indicator before each paced message, for a time growing with its length.
    typing BOOLEAN NOT NULL,
    typing_min_ms BIGINT NOT NULL,
    typing_max_ms BIGINT NOT NULL,
    -- Pace every outbound message of the project, not only campaigns.
    all_messages BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);

-- New contacts taken today by each session (the daily new-contact cap), and when it last
-- sent a paced message (the gap is kept at the send too, not only when a slot is taken).
ALTER TABLE session_pacing ADD COLUMN new_today BIGINT NOT NULL DEFAULT 0;
ALTER TABLE session_pacing ADD COLUMN last_sent_at BIGINT NOT NULL DEFAULT 0;

-- When the session's account was linked (the warm-up ramp). Sessions linked before this
-- migration count from their creation.
ALTER TABLE devices ADD COLUMN linked_at BIGINT;
UPDATE devices SET linked_at = created_at WHERE wa_jid IS NOT NULL;

-- Whether a session ever messaged a number (a new contact or not).
CREATE INDEX messages_by_recipient ON messages (device_id, recipient);
