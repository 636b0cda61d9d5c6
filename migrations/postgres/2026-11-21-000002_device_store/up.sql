-- whatsapp-rust's device store (src/storage/device_store.rs), one session per devices.id.
-- Deleting a device deletes its WhatsApp keys with it.

-- Key-value records: Signal identities, sessions, signed prekeys, sender keys, app-state
-- sync keys and versions, device lists, base keys, group metadata, sent messages, the
-- pending-inbound buffer and the serialized Device itself. `updated_at` is epoch ms of the
-- last write (the expiry clock of sent messages and pending inbound messages).
CREATE TABLE wa_store (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, kind, key)
);

-- One-time prekeys: the id range (max) and the uploaded flag need real columns.
CREATE TABLE wa_prekeys (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    record BYTEA NOT NULL,
    uploaded BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (device_id, id)
);

-- App-state mutation MACs per collection.
CREATE TABLE wa_app_state_macs (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    index_mac BYTEA NOT NULL,
    value_mac BYTEA NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (device_id, collection, index_mac)
);

-- Which group member devices hold our current sender key.
CREATE TABLE wa_sender_key_devices (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    group_jid TEXT NOT NULL,
    device_jid TEXT NOT NULL,
    has_key BOOLEAN NOT NULL,
    PRIMARY KEY (device_id, group_jid, device_jid)
);
CREATE INDEX wa_sender_key_devices_by_device ON wa_sender_key_devices (device_id, device_jid);

-- LID <-> phone number mappings; the phone index serves the reverse lookup.
CREATE TABLE wa_lid_mappings (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    lid TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    learning_source TEXT NOT NULL,
    PRIMARY KEY (device_id, lid)
);
CREATE INDEX wa_lid_mappings_by_phone ON wa_lid_mappings (device_id, phone_number, updated_at);

-- Trusted-contact tokens (timestamps are WhatsApp's unix seconds).
CREATE TABLE wa_tc_tokens (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    jid TEXT NOT NULL,
    token BYTEA NOT NULL,
    token_timestamp BIGINT NOT NULL,
    sender_timestamp BIGINT,
    PRIMARY KEY (device_id, jid)
);

-- Message secrets (expires_at / message_ts are WhatsApp's unix seconds, 0 = never / unknown).
CREATE TABLE wa_msg_secrets (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    chat TEXT NOT NULL,
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    secret BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    message_ts BIGINT NOT NULL,
    PRIMARY KEY (device_id, chat, sender, msg_id)
);
CREATE INDEX wa_msg_secrets_expiry ON wa_msg_secrets (device_id, expires_at) WHERE expires_at <> 0;
