//! What the session supervisor persists: a session's account and state, inbound messages,
//! and the acks and receipts of outbound ones.

use diesel::prelude::*;

use super::DbConn;
use super::models::NewMedia;
use super::queue::{DELIVERED, QUEUED, READ, SENT};
use super::schema::{devices, inbound_messages, media, messages};
use crate::error::Result;
use crate::on_conn;

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
    Ok(
        on_conn!(conn, c => devices::table.find(device_id).select(SessionRow::as_select()).first(c).optional())?,
    )
}

pub fn list(conn: &mut DbConn, project_id: &str) -> Result<Vec<SessionRow>> {
    Ok(on_conn!(conn, c => devices::table
        .filter(devices::project_id.eq(project_id))
        .order(devices::created_at.asc())
        .select(SessionRow::as_select())
        .load(c))?)
}

/// Sessions to bring back at start: every one that was ever linked and not logged out.
pub fn restorable(conn: &mut DbConn) -> Result<Vec<SessionRow>> {
    Ok(on_conn!(conn, c => devices::table
        .filter(devices::wa_jid.is_not_null())
        .filter(devices::state.ne_all(["logged_out", "replaced", "deleted"]))
        .order(devices::created_at.asc())
        .select(SessionRow::as_select())
        .load(c))?)
}

pub fn set_state(
    conn: &mut DbConn,
    device_id: &str,
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    on_conn!(conn, c => diesel::update(devices::table.find(device_id))
        .set((devices::state.eq(state), devices::state_reason.eq(reason), devices::updated_at.eq(now)))
        .execute(c))?;
    Ok(())
}

pub fn set_account(
    conn: &mut DbConn,
    device_id: &str,
    jid: &str,
    lid: Option<&str>,
    phone: &str,
    now: i64,
) -> Result<()> {
    on_conn!(conn, c => diesel::update(devices::table.find(device_id))
        .set((devices::wa_jid.eq(jid), devices::wa_lid.eq(lid), devices::phone.eq(phone), devices::updated_at.eq(now)))
        .execute(c))?;
    Ok(())
}

pub fn set_connected(
    conn: &mut DbConn,
    device_id: &str,
    push_name: Option<&str>,
    now: i64,
) -> Result<()> {
    on_conn!(conn, c => diesel::update(devices::table.find(device_id))
        .set((
            devices::state.eq("connected"),
            devices::state_reason.eq(None::<String>),
            devices::last_connected_at.eq(now),
            devices::updated_at.eq(now),
        ))
        .execute(c))?;
    if let Some(name) = push_name {
        on_conn!(conn, c => diesel::update(devices::table.find(device_id)).set(devices::push_name.eq(name)).execute(c))?;
    }
    Ok(())
}

/// Forgets the linked account (after a logout), keeping the session slot.
pub fn clear_account(
    conn: &mut DbConn,
    device_id: &str,
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    on_conn!(conn, c => diesel::update(devices::table.find(device_id))
        .set((
            devices::wa_jid.eq(None::<String>),
            devices::wa_lid.eq(None::<String>),
            devices::state.eq(state),
            devices::state_reason.eq(reason),
            devices::updated_at.eq(now),
        ))
        .execute(c))?;
    Ok(())
}

pub fn delete(conn: &mut DbConn, device_id: &str) -> Result<bool> {
    Ok(on_conn!(conn, c => diesel::delete(devices::table.find(device_id)).execute(c))? == 1)
}

/// Records the WhatsApp id a claimed message is about to be sent under (fenced).
pub fn set_wa_id(
    conn: &mut DbConn,
    id: &str,
    node: &str,
    token: i64,
    wa_message_id: &str,
) -> Result<bool> {
    let n = on_conn!(conn, c => diesel::update(
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
    let n = on_conn!(conn, c => diesel::update(
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

/// Server ack: `queued → sent`. Returns the ids of the messages that changed.
pub fn mark_acked(
    conn: &mut DbConn,
    device_id: &str,
    wa_message_id: &str,
    now: i64,
) -> Result<Vec<String>> {
    Ok(on_conn!(conn, c => diesel::update(
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
    .get_results(c))?)
}

/// Delivery or read receipt; statuses only move forward. Returns the ids that changed.
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
    let changed: Vec<String> = on_conn!(conn, c => diesel::update(
        messages::table
            .filter(messages::device_id.eq(device_id))
            .filter(messages::wa_message_id.eq_any(wa_ids))
            .filter(messages::status.eq_any(from)),
    )
    .set(messages::status.eq(status))
    .returning(messages::id)
    .get_results(c))?;
    // Fill the times of the steps a receipt implies (a read implies delivered and sent).
    on_conn!(conn, c => diesel::update(messages::table.filter(messages::id.eq_any(&changed)).filter(messages::sent_at.is_null()))
        .set(messages::sent_at.eq(now)).execute(c))?;
    on_conn!(conn, c => diesel::update(messages::table.filter(messages::id.eq_any(&changed)).filter(messages::delivered_at.is_null()))
        .set(messages::delivered_at.eq(now)).execute(c))?;
    if read {
        on_conn!(conn, c => diesel::update(messages::table.filter(messages::id.eq_any(&changed)))
            .set(messages::read_at.eq(now)).execute(c))?;
    }
    Ok(changed)
}

/// A stored media file.
#[derive(Debug, Clone, Queryable)]
pub struct MediaBlob {
    pub mime_type: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

pub fn media_bytes(conn: &mut DbConn, media_id: &str) -> Result<Option<MediaBlob>> {
    Ok(on_conn!(conn, c => media::table
        .find(media_id)
        .select((media::mime_type, media::filename, media::data))
        .first(c)
        .optional())?)
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
        let exists: i64 = on_conn!(conn, c => inbound_messages::table
            .filter(inbound_messages::device_id.eq(&row.device_id))
            .filter(inbound_messages::wa_message_id.eq(&row.wa_message_id))
            .count()
            .get_result(c))?;
        if exists > 0 {
            return Ok(false);
        }
        if let Some(m) = media_row {
            on_conn!(conn, c => diesel::insert_into(media::table).values(m).execute(c))?;
        }
        on_conn!(conn, c => diesel::insert_into(inbound_messages::table).values(row).execute(c))?;
        Ok(true)
    })
}

pub fn list_inbound(
    conn: &mut DbConn,
    device_id: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<InboundRow>> {
    Ok(on_conn!(conn, c => inbound_messages::table
        .filter(inbound_messages::device_id.eq(device_id))
        .order(inbound_messages::seq.desc())
        .limit(limit)
        .offset(offset)
        .select(InboundRow::as_select())
        .load(c))?)
}
