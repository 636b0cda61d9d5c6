-- Broadcast message templates. A template is one document (its language variants with their
-- header, body, footer and buttons, as JSON): it is always read and written whole.
CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    status TEXT NOT NULL,
    variants TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX templates_by_project ON templates (project_id, created_at, id);
