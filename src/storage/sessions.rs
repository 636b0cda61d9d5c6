//! What the session supervisor persists: a session's account and state, inbound messages,
//! and the acks and receipts of outbound ones — each change with its event, in one transaction.

use diesel::prelude::*;

use super::DbConn;
use super::events;
use super::models::NewMedia;
use super::queue::{DELIVERED, QUEUED, READ, SENT};
use super::schema::{devices, inbound_messages, media, messages};
use crate::db_run;
use crate::error::Result;
use crate::events as ev;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = devices)]
pub struct SessionRow {
    pub id: String,
    pub project_id: String,
    pub code: String,
    pub name: String,
    pub state: String,
    pub created_at: i64,
    pub phone: Option<String>,
    pub push_name: Option<String>,
    pub wa_jid: Option<String>,
    pub wa_lid: Option<String>,
    pub state_reason: Option<String>,
    pub last_connected_at: Option<i64>,
}

pub fn get(conn: &mut DbConn, device_id: &str) -> Result<Option<SessionRow>> {
    Ok(db_run!(conn, |c| devices::table
        .find(device_id)
        .select(SessionRow::as_select())
        .first(c)
        .optional())?)
}

pub fn list(conn: &mut DbConn, project_id: &str) -> Result<Vec<SessionRow>> {
    Ok(db_run!(conn, |c| devices::table
        .filter(devices::project_id.eq(project_id))
        .order(devices::created_at.asc())
        .select(SessionRow::as_select())
        .load(c))?)
}

/// Sessions to bring back at start (every one that was ever linked and not logged out),
/// marked `connecting` in the same statement: the state stored before the restart would
/// otherwise be read back as current until each session reconnects.
pub fn begin_restore(conn: &mut DbConn, now: i64) -> Result<Vec<SessionRow>> {
    const REASON: &str = "restoring after a gateway start";
    conn.transaction(|conn| {
        let mut rows: Vec<SessionRow> = db_run!(conn, |c| diesel::update(
            devices::table
                .filter(devices::wa_jid.is_not_null())
                .filter(devices::state.ne_all(["logged_out", "replaced", "deleted"])),
        )
        .set((
            devices::state.eq("connecting"),
            devices::state_reason.eq(REASON),
            devices::updated_at.eq(now),
        ))
        .returning(SessionRow::as_returning())
        .get_results(c))?;
        rows.sort_by_key(|r| r.created_at);
        for r in &rows {
            events::session_status(conn, &r.id, "connecting", Some(REASON), None, now)?;
        }
        Ok(rows)
    })
}

/// Records a state change and, when the state or its reason really changed, its
/// `session.status` event in the same transaction.
pub fn set_state(
    conn: &mut DbConn,
    device_id: &str,
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        let before: Option<(String, Option<String>)> = db_run!(conn, |c| devices::table
            .find(device_id)
            .select((devices::state, devices::state_reason))
            .first(c)
            .optional())?;
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::state.eq(state),
                devices::state_reason.eq(reason),
                devices::updated_at.eq(now)
            ))
            .execute(c))?;
        let changed = before.is_some_and(|(s, r)| s != state || r.as_deref() != reason);
        if changed {
            events::session_status(conn, device_id, state, reason, None, now)?;
        }
        Ok(())
    })
}

/// A new pairing QR code: state `qr` and a `session.status` event carrying the code.
pub fn set_qr(conn: &mut DbConn, device_id: &str, code: &str, now: i64) -> Result<()> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::state.eq("qr"),
                devices::state_reason.eq(None::<String>),
                devices::updated_at.eq(now)
            ))
            .execute(c))?;
        events::session_status(conn, device_id, "qr", None, Some(code), now)
    })
}

/// Moves those of `device_ids` whose stored state is one of `from` to `state` (with
/// `session.status` events), in one transaction. Deciding on the stored state, not on a
/// caller's earlier reading, keeps a state written meanwhile (say `banned`) from being
/// overwritten. Returns the ids that moved.
pub fn set_states_from(
    conn: &mut DbConn,
    device_ids: &[String],
    from: &[&str],
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<Vec<String>> {
    if device_ids.is_empty() {
        return Ok(Vec::new());
    }
    conn.transaction(|conn| {
        let moved: Vec<String> = db_run!(conn, |c| diesel::update(
            devices::table
                .filter(devices::id.eq_any(device_ids))
                .filter(devices::state.eq_any(from)),
        )
        .set((
            devices::state.eq(state),
            devices::state_reason.eq(reason),
            devices::updated_at.eq(now)
        ))
        .returning(devices::id)
        .get_results(c))?;
        for id in &moved {
            events::session_status(conn, id, state, reason, None, now)?;
        }
        Ok(moved)
    })
}

pub fn set_account(
    conn: &mut DbConn,
    device_id: &str,
    jid: &str,
    lid: Option<&str>,
    phone: &str,
    now: i64,
) -> Result<()> {
    db_run!(conn, |c| diesel::update(devices::table.find(device_id))
        .set((
            devices::wa_jid.eq(jid),
            devices::wa_lid.eq(lid),
            devices::phone.eq(phone),
            devices::updated_at.eq(now)
        ))
        .execute(c))?;
    Ok(())
}

pub fn set_connected(
    conn: &mut DbConn,
    device_id: &str,
    push_name: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::state.eq("connected"),
                devices::state_reason.eq(None::<String>),
                devices::last_connected_at.eq(now),
                devices::updated_at.eq(now),
            ))
            .execute(c))?;
        if let Some(name) = push_name {
            db_run!(conn, |c| diesel::update(devices::table.find(device_id))
                .set(devices::push_name.eq(name))
                .execute(c))?;
        }
        events::session_status(conn, device_id, "connected", None, None, now)
    })
}

/// Forgets the linked account (after a logout), keeping the session slot.
pub fn clear_account(
    conn: &mut DbConn,
    device_id: &str,
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::wa_jid.eq(None::<String>),
                devices::wa_lid.eq(None::<String>),
                devices::state.eq(state),
                devices::state_reason.eq(reason),
                devices::updated_at.eq(now),
            ))
            .execute(c))?;
        events::session_status(conn, device_id, state, reason, None, now)
    })
}

pub fn delete(conn: &mut DbConn, device_id: &str) -> Result<bool> {
    Ok(
        db_run!(conn, |c| diesel::delete(devices::table.find(device_id))
            .execute(c))?
            == 1,
    )
}

/// Records the WhatsApp id a claimed message is about to be sent under (fenced).
pub fn set_wa_id(
    conn: &mut DbConn,
    id: &str,
    node: &str,
    token: i64,
    wa_message_id: &str,
) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(
        messages::table
            .filter(messages::id.eq(id))
            .filter(messages::claimed_by.eq(node))
            .filter(messages::claim_token.eq(token))
            .filter(messages::status.eq(QUEUED)),
    )
    .set(messages::wa_message_id.eq(wa_message_id))
    .execute(c))?;
    Ok(n == 1)
}

/// The message was written to WhatsApp under `wa_message_id`; it stays `queued` (and
/// unclaimable) until the server acks it. If no ack comes by `ack_deadline` it becomes due
/// again and is resent under the same id, which receivers de-duplicate.
pub fn mark_dispatched(
    conn: &mut DbConn,
    id: &str,
    node: &str,
    token: i64,
    wa_message_id: &str,
    ack_deadline: i64,
) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(
        messages::table
            .filter(messages::id.eq(id))
            .filter(messages::claimed_by.eq(node))
            .filter(messages::claim_token.eq(token))
            .filter(messages::status.eq(QUEUED)),
    )
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
    device_id: &str,
    wa_message_id: &str,
    now: i64,
) -> Result<Vec<String>> {
    conn.transaction(|conn| {
        let changed: Vec<String> = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::device_id.eq(device_id))
                .filter(messages::wa_message_id.eq(wa_message_id))
                .filter(messages::status.eq(QUEUED)),
        )
        .set((
            messages::status.eq(SENT),
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
    device_id: &str,
    wa_ids: &[String],
    read: bool,
    now: i64,
) -> Result<Vec<String>> {
    let from: &[&str] = if read {
        &[QUEUED, SENT, DELIVERED]
    } else {
        &[QUEUED, SENT]
    };
    let status = if read { READ } else { DELIVERED };
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
        events::implied_statuses(conn, &unsent, SENT, now)?;
        if read {
            events::implied_statuses(conn, &undelivered, DELIVERED, now)?;
        }
        events::message_statuses(conn, &changed, now)?;
        Ok(changed)
    })
}

/// A stored media file.
#[derive(Debug, Clone, Queryable)]
pub struct MediaBlob {
    pub mime_type: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// A media file's bytes, unless they were dropped after the retention period.
pub fn media_bytes(conn: &mut DbConn, media_id: &str) -> Result<Option<MediaBlob>> {
    Ok(db_run!(conn, |c| media::table
        .find(media_id)
        .filter(media::purged_at.is_null())
        .select((media::mime_type, media::filename, media::data))
        .first(c)
        .optional())?)
}

/// A project's stored media file (the project check keeps tenants apart), with the time its
/// bytes were dropped if the retention period is over.
pub fn project_media(
    conn: &mut DbConn,
    project_id: &str,
    media_id: &str,
) -> Result<Option<(MediaBlob, Option<i64>)>> {
    Ok(db_run!(conn, |c| media::table
        .filter(media::id.eq(media_id))
        .filter(media::project_id.eq(project_id))
        .select((
            (media::mime_type, media::filename, media::data),
            media::purged_at
        ))
        .first(c)
        .optional())?)
}

/// Drops the bytes of up to `limit` media files stored before `before`, keeping those of
/// messages still waiting to be sent; the rows (type, size, digest) stay for history.
/// Returns how many were dropped.
pub fn purge_media(conn: &mut DbConn, before: i64, now: i64, limit: i64) -> Result<usize> {
    use super::schema::messages;
    db_run!(conn, |c| {
        let waiting = messages::table
            .filter(messages::status.eq(super::queue::QUEUED))
            .filter(messages::media_id.is_not_null())
            .select(messages::media_id.assume_not_null());
        let ids: Vec<String> = media::table
            .filter(media::purged_at.is_null())
            .filter(media::created_at.lt(before))
            .filter(diesel::dsl::not(media::id.eq_any(waiting)))
            .select(media::id)
            .limit(limit)
            .load(c)?;
        Ok(diesel::update(media::table.filter(media::id.eq_any(&ids)))
            .set((media::data.eq(Vec::<u8>::new()), media::purged_at.eq(now)))
            .execute(c)?)
    })
}

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = inbound_messages)]
pub struct InboundRow {
    pub id: String,
    pub project_id: String,
    pub device_id: String,
    pub wa_message_id: String,
    pub chat_jid: String,
    pub sender_jid: String,
    pub sender_phone: Option<String>,
    pub sender_lid: Option<String>,
    pub push_name: Option<String>,
    pub kind: String,
    pub body: Option<String>,
    pub media_id: Option<String>,
    pub sent_at: i64,
    pub created_at: i64,
}

/// Stores an inbound message once (WhatsApp may deliver it again after a reconnect).
/// Returns false for a duplicate.
pub fn insert_inbound(
    conn: &mut DbConn,
    row: &InboundRow,
    media_row: Option<&NewMedia>,
) -> Result<bool> {
    conn.transaction(|conn| {
        let exists: i64 = db_run!(conn, |c| inbound_messages::table
            .filter(inbound_messages::device_id.eq(&row.device_id))
            .filter(inbound_messages::wa_message_id.eq(&row.wa_message_id))
            .count()
            .get_result(c))?;
        if exists > 0 {
            return Ok(false);
        }
        if let Some(m) = media_row {
            db_run!(conn, |c| diesel::insert_into(media::table)
                .values(m)
                .execute(c))?;
        }
        db_run!(conn, |c| diesel::insert_into(inbound_messages::table)
            .values(row)
            .execute(c))?;
        let fields = ev::message_received(&ev::Inbound {
            wa_message_id: &row.wa_message_id,
            chat_jid: &row.chat_jid,
            sender_jid: &row.sender_jid,
            sender_phone: row.sender_phone.as_deref(),
            sender_lid: row.sender_lid.as_deref(),
            push_name: row.push_name.as_deref(),
            kind: &row.kind,
            body: row.body.as_deref(),
            sent_at_ms: row.sent_at,
            media: media_row.map(|m| ev::MediaRef {
                id: &m.id,
                mime_type: &m.mime_type,
                size: m.size_bytes,
                sha256: &m.sha256,
                filename: m.filename.as_deref(),
            }),
        });
        events::record(
            conn,
            ev::NewEvent {
                project_id: row.project_id.clone(),
                device_id: Some(row.device_id.clone()),
                kind: ev::MESSAGE_RECEIVED,
                fields,
            },
            row.created_at,
        )?;
        Ok(true)
    })
}

pub fn list_inbound(
    conn: &mut DbConn,
    device_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<InboundRow>> {
    Ok(db_run!(conn, |c| inbound_messages::table
        .filter(inbound_messages::device_id.eq(device_id))
        .order(inbound_messages::seq.desc())
        .limit(limit)
        .offset(offset)
        .select(InboundRow::as_select())
        .load(c))?)
}
