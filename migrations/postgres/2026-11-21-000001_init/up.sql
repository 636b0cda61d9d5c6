-- Times are epoch milliseconds (BIGINT) on both backends, so queries are portable.
CREATE TABLE projects (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    api_key_prefix TEXT NOT NULL,
    api_secret_enc TEXT NOT NULL,
    rate_limit_per_minute BIGINT NOT NULL,
    monthly_quota BIGINT NOT NULL,
    max_sessions BIGINT NOT NULL,
    suspended BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX devices_project ON devices (project_id);

CREATE TABLE media (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    filename TEXT,
    size_bytes BIGINT NOT NULL,
    data BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE messages (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    device_code TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT,
    media_id TEXT REFERENCES media(id),
    payload TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    available_at BIGINT NOT NULL,
    claimed_by TEXT,
    claim_token BIGINT NOT NULL DEFAULT 0,
    claim_expires_at BIGINT,
    wa_message_id TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    delivered_at BIGINT,
    read_at BIGINT,
    failed_at BIGINT,
    expires_at BIGINT NOT NULL
);
-- The claim path: a device's queued messages in acceptance order.
CREATE INDEX messages_queue ON messages (device_id, seq) WHERE status = 'queued';
CREATE INDEX messages_project ON messages (project_id, seq);
CREATE INDEX messages_expiry ON messages (expires_at) WHERE status = 'queued';

CREATE TABLE idempotency_keys (
    project_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, key)
);
CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);

-- Rate-limit (per minute) and quota (per calendar month) counters.
CREATE TABLE usage_counters (
    project_id TEXT NOT NULL,
    bucket TEXT NOT NULL,
    count BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket)
);
