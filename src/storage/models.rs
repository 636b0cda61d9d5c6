//! Row types. Times are epoch milliseconds.

use diesel::prelude::*;

use super::schema::{devices, idempotency_keys, media, messages, projects};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = projects)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub api_key_hash: String,
    pub api_key_prefix: String,
    pub api_secret_enc: String,
    pub rate_limit_per_minute: i64,
    pub monthly_quota: i64,
    pub max_sessions: i64,
    pub suspended: bool,
    pub created_at: i64,
    /// Refuse a request signature already seen within the signing window.
    pub refuse_replays: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = devices)]
pub struct DeviceRow {
    pub id: String,
    pub project_id: String,
    pub code: String,
    pub name: String,
    pub state: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = media)]
pub struct NewMedia {
    pub id: String,
    pub project_id: String,
    pub sha256: String,
    pub mime_type: String,
    pub filename: Option<String>,
    pub size_bytes: i64,
    pub data: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = media)]
pub struct MediaMeta {
    pub id: String,
    pub sha256: String,
    pub mime_type: String,
    pub filename: Option<String>,
    pub size_bytes: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = messages)]
pub struct NewMessage {
    pub id: String,
    pub project_id: String,
    pub device_id: String,
    pub device_code: String,
    pub recipient: String,
    pub kind: String,
    pub body: Option<String>,
    pub media_id: Option<String>,
    pub payload: Option<String>,
    pub status: String,
    pub max_attempts: i32,
    pub available_at: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub seq: i64,
    pub id: String,
    pub project_id: String,
    pub device_id: String,
    pub device_code: String,
    pub recipient: String,
    pub kind: String,
    pub body: Option<String>,
    pub media_id: Option<String>,
    pub payload: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub available_at: i64,
    pub claimed_by: Option<String>,
    pub claim_token: i64,
    pub claim_expires_at: Option<i64>,
    pub wa_message_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRow {
    pub project_id: String,
    pub key: String,
    pub fingerprint: String,
    pub message_id: String,
    pub expires_at: i64,
}
