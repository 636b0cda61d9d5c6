//! Outbound messages: their rows, reading them back (by id, listing, queue depth) and the
//! periodic clean-up of expired idempotency keys and usage counters. Every status change of
//! a message is in [`queue`], the queue's state machine.

pub mod queue;

use diesel::prelude::*;

use super::DbConn;
use super::schema::{idempotency_keys, messages, usage_counters};
use crate::db_run;
use crate::error::Result;
use crate::values::{MessageStatus, ProjectId, SessionId};

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = messages)]
pub struct NewMessage {
    pub id: String,
    pub project_id: ProjectId,
    pub device_id: SessionId,
    pub device_code: String,
    pub recipient: String,
    pub kind: String,
    pub body: Option<String>,
    pub media_id: Option<String>,
    pub payload: Option<String>,
    pub status: MessageStatus,
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
    pub project_id: ProjectId,
    pub device_id: SessionId,
    pub device_code: String,
    pub recipient: String,
    pub kind: String,
    pub body: Option<String>,
    pub media_id: Option<String>,
    pub payload: Option<String>,
    pub status: MessageStatus,
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

/// A project's message by id. Another project's message is `None`, like a missing one.
pub fn by_id(conn: &mut DbConn, project_id: &ProjectId, id: &str) -> Result<Option<MessageRow>> {
    Ok(db_run!(conn, |c| messages::table
        .filter(messages::id.eq(id))
        .filter(messages::project_id.eq(project_id))
        .select(MessageRow::as_select())
        .first(c)
        .optional())?)
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub device_code: Option<String>,
    pub status: Option<MessageStatus>,
    /// Only rows with `seq` below this (keyset pagination, newest first).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

pub fn list(conn: &mut DbConn, project_id: &ProjectId, f: &ListFilter) -> Result<Vec<MessageRow>> {
    Ok(db_run!(conn, |c| {
        let mut q = messages::table
            .filter(messages::project_id.eq(project_id))
            .select(MessageRow::as_select())
            .order(messages::seq.desc())
            .limit(f.limit)
            .into_boxed();
        if let Some(d) = &f.device_code {
            q = q.filter(messages::device_code.eq(d.clone()));
        }
        if let Some(s) = &f.status {
            q = q.filter(messages::status.eq(*s));
        }
        if let Some(b) = f.before_seq {
            q = q.filter(messages::seq.lt(b));
        }
        q.load(c)
    })?)
}

/// Messages waiting to be sent, across all devices (the queue-depth gauge).
pub fn queued_count(conn: &mut DbConn) -> Result<i64> {
    Ok(db_run!(conn, |c| messages::table
        .filter(messages::status.eq(MessageStatus::Queued))
        .count()
        .get_result(c))?)
}

/// Deletes idempotency keys and usage counters past their expiry; returns rows removed.
pub fn purge_expired(conn: &mut DbConn, now: i64) -> Result<usize> {
    let keys = db_run!(conn, |c| diesel::delete(
        idempotency_keys::table.filter(idempotency_keys::expires_at.le(now))
    )
    .execute(c))?;
    let counters = db_run!(conn, |c| diesel::delete(
        usage_counters::table.filter(usage_counters::expires_at.le(now))
    )
    .execute(c))?;
    Ok(keys + counters)
}
