-- The media of a campaign's template header (IMAGE, VIDEO, DOCUMENT), fetched once per
-- campaign and URL, not once per recipient: one node claims the fetch (a lease in
-- `retry_at` while `fetching`), stores the file in `media` and every recipient's message
-- references it. A failed fetch is retried a bounded number of times, then fails the
-- campaign's recipients with its code.
CREATE TABLE broadcast_media (
    broadcast_id TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- fetching, retry, ready, failed
    state TEXT NOT NULL,
    media_id TEXT,
    attempts INTEGER NOT NULL,
    -- fetching: when the fetcher's claim lapses; retry: when the next attempt may start.
    retry_at BIGINT NOT NULL,
    claimed_by TEXT,
    error_code TEXT,
    error_message TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (broadcast_id, url)
);
CREATE INDEX broadcast_media_by_media ON broadcast_media (media_id);

-- Whether a number is on WhatsApp, as a session of the project last asked WhatsApp: the
-- number check's and `skip_unregistered` campaigns' cache.
CREATE TABLE number_checks (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    phone TEXT NOT NULL,
    on_whatsapp BOOLEAN NOT NULL,
    checked_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, phone)
);
