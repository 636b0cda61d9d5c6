-- Broadcast campaigns and their recipients. A campaign is expanded into one recipient row
-- per number when it is created; a dispatcher on any node claims due recipients (leased
-- claims, SKIP LOCKED on PostgreSQL) and hands each to the outbound message queue under an
-- idempotency key of its own, so a crash between the two sends nothing twice. A recipient's
-- delivery status is its message's.
CREATE TABLE broadcasts (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    template_id TEXT NOT NULL,
    language TEXT NOT NULL,
    -- direct or contact_list
    kind TEXT NOT NULL,
    contact_list_id TEXT,
    -- JSON array of session ids; recipient n goes through session n mod len.
    session_ids TEXT NOT NULL,
    -- JSON: the parameters as given (body/header/buttons, values or column names).
    parameters TEXT NOT NULL,
    -- scheduled, running, paused, completed, cancelled
    state TEXT NOT NULL,
    -- immediately or specific
    execute_type TEXT NOT NULL,
    send_at BIGINT NOT NULL,
    -- Pacing of each session for this campaign: a random gap between messages in
    -- [pacing_min_ms, pacing_max_ms], at most daily_cap messages per session and UTC day.
    pacing_min_ms BIGINT NOT NULL,
    pacing_max_ms BIGINT NOT NULL,
    daily_cap BIGINT NOT NULL,
    recipients_total BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX broadcasts_by_project ON broadcasts (project_id, created_at, id);
CREATE INDEX broadcasts_due ON broadcasts (state, send_at);

CREATE TABLE broadcast_recipients (
    broadcast_id TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    phone TEXT NOT NULL,
    full_name TEXT NOT NULL,
    -- JSON object: the recipient's values (list columns, or the direct send's values).
    variables TEXT NOT NULL,
    -- Index into the broadcast's session_ids.
    session_slot INTEGER NOT NULL,
    -- created, enqueued, failed, cancelled
    state TEXT NOT NULL,
    available_at BIGINT NOT NULL,
    claimed_by TEXT,
    claim_expires_at BIGINT,
    message_id TEXT,
    error_code TEXT,
    error_message TEXT,
    -- Why a created recipient waits (rate limit, session not connected), when it does.
    held_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (broadcast_id, seq)
);
CREATE INDEX broadcast_recipients_due ON broadcast_recipients (broadcast_id, state, available_at, seq);
CREATE INDEX broadcast_recipients_message ON broadcast_recipients (message_id);

-- Each session's pacing state, shared by every node and kept across restarts: when its next
-- campaign message may go, and how many went on the current UTC day.
CREATE TABLE session_pacing (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    next_at BIGINT NOT NULL,
    day TEXT NOT NULL,
    sent_today BIGINT NOT NULL
);
-- A campaign recipient's reply (`replied`): its inbound messages on the session, by sender.
CREATE INDEX inbound_by_sender ON inbound_messages (device_id, sender_phone, created_at);
