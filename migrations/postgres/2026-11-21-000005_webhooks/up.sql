-- Webhook registrations: per project (device_id NULL) or per session.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    device_id TEXT REFERENCES devices(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- Comma-separated event names, or "*".
    events TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason TEXT,
    secret_enc TEXT NOT NULL,
    previous_secret_enc TEXT,
    previous_secret_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_project ON webhooks (project_id);

-- Every event, written in the transaction of the change that caused it. `txid` is the writing
-- transaction's id: a reader takes only rows of transactions older than every one still
-- running (the snapshot's xmin) and orders by (txid, seq), so a cursor never skips a row that
-- commits late. (On SQLite writers are serial and txid is 0.)
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    device_id TEXT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_project_order ON events (project_id, txid, seq);
CREATE INDEX events_device_order ON events (device_id, txid, seq);
CREATE INDEX events_created ON events (created_at);

-- The outbox: one row per (event, webhook). A lane (the session, or '' for project events)
-- is delivered in order, one delivery at a time.
CREATE TABLE webhook_deliveries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    lane TEXT NOT NULL,
    -- pending | failed (retry scheduled) | succeeded | dead
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state IN ('pending', 'failed');
CREATE INDEX deliveries_lane ON webhook_deliveries (webhook_id, lane, seq) WHERE state IN ('pending', 'failed');
CREATE INDEX deliveries_webhook ON webhook_deliveries (webhook_id, seq);
CREATE INDEX deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    seq BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    status_code INTEGER,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, seq);

-- Who is delivering a lane (a lease, so several nodes never deliver one lane at once), and
-- until when the lane waits for its head's retry.
CREATE TABLE webhook_lanes (
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    lane TEXT NOT NULL,
    owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    blocked_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (webhook_id, lane)
);
