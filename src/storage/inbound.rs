//! Inbound messages: stored once each (WhatsApp may deliver one again after a reconnect),
//! with their media and their `message.received` event in the same transaction, before the
//! message is acknowledged to WhatsApp.

use diesel::prelude::*;

use super::DbConn;
use super::events;
use super::media::NewMedia;
use super::schema::{inbound_messages, media};
use crate::db_run;
use crate::error::Result;
use crate::events as ev;
use crate::values::{ProjectId, SessionId};

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = inbound_messages)]
pub struct InboundRow {
    pub id: String,
    pub project_id: ProjectId,
    pub device_id: SessionId,
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
    device_id: &SessionId,
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
