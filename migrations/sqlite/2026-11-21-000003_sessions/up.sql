-- What a session knows about its WhatsApp account, and why it is in its state.
ALTER TABLE devices ADD COLUMN phone TEXT;
ALTER TABLE devices ADD COLUMN push_name TEXT;
ALTER TABLE devices ADD COLUMN wa_jid TEXT;
ALTER TABLE devices ADD COLUMN wa_lid TEXT;
ALTER TABLE devices ADD COLUMN state_reason TEXT;
ALTER TABLE devices ADD COLUMN last_connected_at BIGINT;
ALTER TABLE devices ADD COLUMN updated_at BIGINT;

-- Receipts and acks find outbound messages by their WhatsApp id.
CREATE INDEX messages_wa_id ON messages (device_id, wa_message_id);
-- Head-of-line per recipient keeps each recipient's messages in order.
CREATE INDEX messages_recipient_queue ON messages (device_id, recipient, seq) WHERE status = 'queued';

CREATE TABLE inbound_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    wa_message_id TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    sender_jid TEXT NOT NULL,
    sender_phone TEXT,
    sender_lid TEXT,
    push_name TEXT,
    kind TEXT NOT NULL,
    body TEXT,
    media_id TEXT REFERENCES media(id),
    sent_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (device_id, wa_message_id)
);
CREATE INDEX inbound_device ON inbound_messages (device_id, seq);
