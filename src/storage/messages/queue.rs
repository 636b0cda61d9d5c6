//! The outbound queue's state machine on the `messages` table: every status transition of
//! a message is here — claim, dispatch, sent (direct or by the server's ack), retry, fail,
//! expire and exhaust, delivery and read receipts — each fenced or conditioned on the stored
//! status, and each that a subscriber can see recorded with its `message.status` event.
//!
//! A worker claims a device's due messages in acceptance order; each claim increments
//! `attempts` and `claim_token` and sets a lease (`claim_expires_at`). Every completion is
//! fenced on `(claimed_by, claim_token)`, so a worker whose lease expired (and whose message
//! was rescued by another) cannot overwrite the newer outcome. A message whose lease expired
//! is claimable again: that is the rescue of stuck work. On PostgreSQL the claim uses
//! `FOR UPDATE SKIP LOCKED`, so nodes claiming concurrently never get the same message.

use std::sync::LazyLock;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::MessageRow;
use crate::db_run;
use crate::error::Result;
use crate::storage::schema::messages;
use crate::storage::{Backend, DbConn, events};
use crate::values::{MessageStatus, SessionId};

/// Error code of messages that were never sent before their expiry.
pub const EXPIRED_CODE: &str = "MESSAGE_EXPIRED";
/// Error code of messages whose every attempt failed or whose worker kept dying.
pub const EXHAUSTED_CODE: &str = "SEND_ATTEMPTS_EXHAUSTED";

/// The claim statement (see the file): SQLite's as written, PostgreSQL's with its row lock.
const CLAIM: &str = include_str!("../sql/claim.sql");
static CLAIM_SKIP_LOCKED: LazyLock<String> =
    LazyLock::new(|| CLAIM.replacen("/* row lock */", "FOR UPDATE SKIP LOCKED", 1));

/// Claims up to `limit` due messages of one device for `node`, leased for `lease_ms`.
pub fn claim(
    conn: &mut DbConn,
    device_id: &SessionId,
    node: &str,
    limit: i64,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<MessageRow>> {
    let sql = match conn.backend() {
        Backend::Postgres => conn.portable_sql(CLAIM_SKIP_LOCKED.as_str()),
        Backend::Sqlite => conn.portable_sql(CLAIM),
    };
    let mut rows: Vec<MessageRow> = conn.transaction(|conn| {
        Ok(db_run!(conn, |c| diesel::sql_query(sql.as_ref())
            .bind::<Text, _>(device_id)
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(node)
            .bind::<BigInt, _>(now + lease_ms)
            .bind::<BigInt, _>(limit)
            .load(c))?)
    })?;
    rows.sort_by_key(|r| r.seq);
    Ok(rows)
}

/// A worker's claim on one message, as [`claim`] handed it out. Every completion is fenced
/// on it: it changes the message only while the claim is still the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub message_id: String,
    /// The node that claimed it.
    pub node: String,
    /// The message's `claim_token` when it was claimed.
    pub token: i64,
}

impl MessageRow {
    /// `node`'s claim on this (claimed) message.
    pub fn claim(&self, node: &str) -> Claim {
        Claim {
            message_id: self.id.clone(),
            node: node.to_owned(),
            token: self.claim_token,
        }
    }
}

/// The fence every completion must pass: still queued, still ours, the same claim.
macro_rules! fenced {
    ($claim:expr) => {
        messages::table
            .filter(messages::id.eq(&$claim.message_id))
            .filter(messages::claimed_by.eq(&$claim.node))
            .filter(messages::claim_token.eq($claim.token))
            .filter(messages::status.eq(MessageStatus::Queued))
    };
}

/// The message went out (server ack); returns false if the claim was lost meanwhile.
pub fn mark_sent(conn: &mut DbConn, claim: &Claim, wa_message_id: &str, now: i64) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(fenced!(claim))
        .set((
            messages::status.eq(MessageStatus::Sent),
            messages::wa_message_id.eq(wa_message_id),
            messages::sent_at.eq(now),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .execute(c))?;
    Ok(n == 1)
}

/// A transient failure: back to the queue, due again at `retry_at`. When no attempts are
/// left the message fails instead. Returns false if the claim was lost meanwhile.
pub fn retry_later(
    conn: &mut DbConn,
    row: &MessageRow,
    node: &str,
    error: &str,
    retry_at: i64,
    now: i64,
) -> Result<bool> {
    let claim = row.claim(node);
    if row.attempts >= row.max_attempts {
        return fail(conn, &claim, EXHAUSTED_CODE, error, now);
    }
    let n = db_run!(conn, |c| diesel::update(fenced!(claim))
        .set((
            messages::available_at.eq(retry_at),
            messages::error_message.eq(error),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .execute(c))?;
    Ok(n == 1)
}

/// Pacing holds the message until `until`, with `reason` (its `error_message` while it
/// waits): back to the queue without spending an attempt (the claim took one), and its
/// expiry moved so that it keeps the time to live it had left, as pacing never drops a
/// message. Returns false if the claim was lost meanwhile.
pub fn defer(
    conn: &mut DbConn,
    row: &MessageRow,
    node: &str,
    reason: &str,
    until: i64,
    now: i64,
) -> Result<bool> {
    let claim = row.claim(node);
    let expires_at = row.expires_at.max(until + (row.expires_at - now).max(0));
    let n = db_run!(conn, |c| diesel::update(fenced!(claim))
        .set((
            messages::available_at.eq(until),
            messages::expires_at.eq(expires_at),
            messages::attempts.eq((row.attempts - 1).max(0)),
            messages::error_message.eq(reason),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .execute(c))?;
    Ok(n == 1)
}

/// The message is going out: the reason pacing held it (see [`defer`]) no longer applies.
pub fn clear_pacing_reason(conn: &mut DbConn, claim: &Claim) -> Result<()> {
    db_run!(conn, |c| diesel::update(
        fenced!(claim).filter(messages::error_message.like("pacing:%"))
    )
    .set(messages::error_message.eq(None::<String>))
    .execute(c))?;
    Ok(())
}

/// A permanent failure, with its `message.status` event. Returns false if the claim was lost
/// meanwhile.
pub fn fail(conn: &mut DbConn, claim: &Claim, code: &str, error: &str, now: i64) -> Result<bool> {
    conn.transaction(|conn| {
        let n = db_run!(conn, |c| diesel::update(fenced!(claim))
            .set((
                messages::status.eq(MessageStatus::Failed),
                messages::error_code.eq(code),
                messages::error_message.eq(error),
                messages::failed_at.eq(now),
                messages::claimed_by.eq(None::<String>),
                messages::claim_expires_at.eq(None::<i64>),
            ))
            .execute(c))?;
        if n == 1 {
            events::message_statuses(conn, std::slice::from_ref(&claim.message_id), now)?;
        }
        Ok(n == 1)
    })
}

/// Fails queued messages that can no longer be sent: past their expiry, or out of attempts
/// after their last lease ran out (a worker that died mid-send every time). Each failure
/// gets its `message.status` event.
pub fn expire_and_exhaust(conn: &mut DbConn, now: i64) -> Result<usize> {
    conn.transaction(|conn| {
        let expired: Vec<String> = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::status.eq(MessageStatus::Queued))
                .filter(messages::expires_at.le(now))
                .filter(
                    messages::claim_expires_at
                        .is_null()
                        .or(messages::claim_expires_at.lt(now))
                ),
        )
        .set((
            messages::status.eq(MessageStatus::Failed),
            messages::error_code.eq(EXPIRED_CODE),
            messages::error_message.eq("message expired before it could be sent"),
            messages::failed_at.eq(now),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .returning(messages::id)
        .get_results(c))?;
        let exhausted: Vec<String> = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::status.eq(MessageStatus::Queued))
                .filter(messages::attempts.ge(messages::max_attempts))
                .filter(messages::claim_expires_at.lt(now)),
        )
        .set((
            messages::status.eq(MessageStatus::Failed),
            messages::error_code.eq(EXHAUSTED_CODE),
            messages::error_message.eq("no attempts left: the sending worker did not complete"),
            messages::failed_at.eq(now),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .returning(messages::id)
        .get_results(c))?;
        events::message_statuses(conn, &expired, now)?;
        events::message_statuses(conn, &exhausted, now)?;
        Ok(expired.len() + exhausted.len())
    })
}

/// Records the WhatsApp id a claimed message is about to be sent under (fenced).
pub fn set_wa_id(conn: &mut DbConn, claim: &Claim, wa_message_id: &str) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(fenced!(claim))
        .set(messages::wa_message_id.eq(wa_message_id))
        .execute(c))?;
    Ok(n == 1)
}

/// The message was written to WhatsApp under `wa_message_id`; it stays `queued` (and
/// unclaimable) until the server acks it. If no ack comes by `ack_deadline` it becomes due
/// again and is resent under the same id, which receivers de-duplicate.
pub fn mark_dispatched(
    conn: &mut DbConn,
    claim: &Claim,
    wa_message_id: &str,
    ack_deadline: i64,
) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(fenced!(claim))
        .set((
            messages::wa_message_id.eq(wa_message_id),
            messages::available_at.eq(ack_deadline),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .execute(c))?;
    Ok(n == 1)
}

/// Server ack: `queued → sent`, with its `message.status` event. Returns the ids of the
/// messages that changed.
pub fn mark_acked(
    conn: &mut DbConn,
    device_id: &SessionId,
    wa_message_id: &str,
    now: i64,
) -> Result<Vec<String>> {
    mark_acked_all(conn, device_id, &[wa_message_id.to_owned()], now)
}

/// [`mark_acked`] for several acks in one statement.
pub fn mark_acked_all(
    conn: &mut DbConn,
    device_id: &SessionId,
    wa_message_ids: &[String],
    now: i64,
) -> Result<Vec<String>> {
    conn.transaction(|conn| {
        let changed: Vec<String> = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::device_id.eq(device_id))
                .filter(messages::wa_message_id.eq_any(wa_message_ids))
                .filter(messages::status.eq(MessageStatus::Queued)),
        )
        .set((
            messages::status.eq(MessageStatus::Sent),
            messages::sent_at.eq(now),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .returning(messages::id)
        .get_results(c))?;
        events::message_statuses(conn, &changed, now)?;
        Ok(changed)
    })
}

/// Delivery or read receipt; statuses only move forward. Returns the ids that changed, each
/// with its `message.status` event.
pub fn mark_receipt(
    conn: &mut DbConn,
    device_id: &SessionId,
    wa_ids: &[String],
    read: bool,
    now: i64,
) -> Result<Vec<String>> {
    let from: &[MessageStatus] = if read {
        &[
            MessageStatus::Queued,
            MessageStatus::Sent,
            MessageStatus::Delivered,
        ]
    } else {
        &[MessageStatus::Queued, MessageStatus::Sent]
    };
    let status = if read {
        MessageStatus::Read
    } else {
        MessageStatus::Delivered
    };
    conn.transaction(|conn| {
        let changed: Vec<String> = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::device_id.eq(device_id))
                .filter(messages::wa_message_id.eq_any(wa_ids))
                .filter(messages::status.eq_any(from)),
        )
        .set(messages::status.eq(status))
        .returning(messages::id)
        .get_results(c))?;
        // Fill the times of the steps a receipt implies (a read implies delivered and sent);
        // a step with no time yet was never reported (the receipt came before the server
        // ack), so it gets its event too.
        let unsent: Vec<String> = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::id.eq_any(&changed))
                .filter(messages::sent_at.is_null())
        )
        .set(messages::sent_at.eq(now))
        .returning(messages::id)
        .get_results(c))?;
        let undelivered: Vec<String> = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::id.eq_any(&changed))
                .filter(messages::delivered_at.is_null())
        )
        .set(messages::delivered_at.eq(now))
        .returning(messages::id)
        .get_results(c))?;
        if read {
            db_run!(conn, |c| diesel::update(
                messages::table.filter(messages::id.eq_any(&changed))
            )
            .set(messages::read_at.eq(now))
            .execute(c))?;
        }
        events::implied_statuses(conn, &unsent, MessageStatus::Sent, now)?;
        if read {
            events::implied_statuses(conn, &undelivered, MessageStatus::Delivered, now)?;
        }
        events::message_statuses(conn, &changed, now)?;
        Ok(changed)
    })
}

/// Exponential backoff with ±20 % jitter: 5 s, 10 s, 20 s … capped at 10 minutes.
pub fn backoff_ms(attempt: i32) -> i64 {
    let base: i64 = 5_000;
    let exp = base
        .saturating_mul(1i64 << attempt.clamp(1, 20).saturating_sub(1))
        .min(600_000);
    let jitter_span = exp / 5;
    let r = i64::from(u16::from_le_bytes(crate::crypto::random_bytes::<2>()));
    exp - jitter_span + (2 * jitter_span * r) / i64::from(u16::MAX)
}

/// Sessions with a message due now (the same conditions as [`claim`] but for the recipient
/// order), at most `limit`: the node-wide scan that wakes the workers of those it runs, so an
/// idle session's worker needs no timer of its own (retries, ack deadlines and messages
/// accepted where no wake reached this node all come due here).
pub fn due_sessions(conn: &mut DbConn, now: i64, limit: i64) -> Result<Vec<String>> {
    Ok(db_run!(conn, |c| messages::table
        .filter(messages::status.eq(MessageStatus::Queued))
        .filter(messages::available_at.le(now))
        .filter(
            messages::claim_expires_at
                .is_null()
                .or(messages::claim_expires_at.lt(now))
        )
        .filter(messages::attempts.lt(messages::max_attempts))
        .filter(messages::expires_at.gt(now))
        .select(messages::device_id)
        .distinct()
        .limit(limit)
        .load::<String>(c))?)
}

/// A node took these sessions over: the claims other nodes hold on their queued messages
/// are void (their workers ran under the previous lease, whose writes are fenced now), so
/// the new owner sends them at once rather than after the claims' own lease. A message the
/// old owner had written already goes out again with the same WhatsApp id, which the
/// recipient de-duplicates.
pub fn void_claims(conn: &mut DbConn, device_ids: &[String], node: &str) -> Result<usize> {
    Ok(db_run!(conn, |c| diesel::update(
        messages::table
            .filter(messages::device_id.eq_any(device_ids))
            .filter(messages::status.eq(MessageStatus::Queued))
            .filter(messages::claimed_by.is_not_null())
            .filter(messages::claimed_by.ne(node)),
    )
    .set(messages::claim_expires_at.eq(None::<i64>))
    .execute(c))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_claims_skip_locked_rows() {
        assert_eq!(CLAIM.matches("/* row lock */").count(), 1);
        assert!(CLAIM_SKIP_LOCKED.contains("LIMIT $5\n    FOR UPDATE SKIP LOCKED\n)"));
    }
}
