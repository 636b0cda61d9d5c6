-- SAK accounts: a registered user owns one project; user API keys manage its sessions;
-- each session has its own API key for messaging. Keys are stored as SHA-256 hashes.
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);

CREATE TABLE user_api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX user_api_keys_user ON user_api_keys (user_id);

ALTER TABLE devices ADD COLUMN session_key_hash TEXT;
CREATE UNIQUE INDEX devices_session_key ON devices (session_key_hash);
