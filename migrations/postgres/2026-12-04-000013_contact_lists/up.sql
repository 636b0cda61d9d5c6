-- Contact lists imported from CSV: the list (its import progress and counts), its contacts
-- (one per normalized number; a duplicate row is merged into it), and the rows refused.
CREATE TABLE contact_lists (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    source_type TEXT NOT NULL,
    -- processing, success or failed
    progress TEXT NOT NULL,
    -- The node running the import (an interrupted import is failed by it at its next start).
    node_id TEXT NOT NULL,
    rows_total BIGINT NOT NULL DEFAULT 0,
    accepted BIGINT NOT NULL DEFAULT 0,
    rejected BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    -- JSON array of the variable columns (every column but phone_number and full_name).
    variables TEXT NOT NULL DEFAULT '[]',
    error_message TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX contact_lists_by_project ON contact_lists (project_id, created_at, id);
CREATE INDEX contact_lists_processing ON contact_lists (node_id, progress);

CREATE TABLE contact_list_contacts (
    list_id TEXT NOT NULL REFERENCES contact_lists(id) ON DELETE CASCADE,
    phone TEXT NOT NULL,
    full_name TEXT NOT NULL,
    -- JSON object: variable column -> value.
    variables TEXT NOT NULL,
    row_no BIGINT NOT NULL,
    PRIMARY KEY (list_id, phone)
);

CREATE TABLE contact_list_rejects (
    list_id TEXT NOT NULL REFERENCES contact_lists(id) ON DELETE CASCADE,
    row_no BIGINT NOT NULL,
    phone TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (list_id, row_no)
);

-- Numbers a project does not send campaigns to: opted out by a stop keyword, or added.
CREATE TABLE suppressions (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    phone TEXT NOT NULL,
    -- STOP_KEYWORD or MANUAL
    reason TEXT NOT NULL,
    -- The keyword, or a note given when added.
    detail TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, phone)
);
