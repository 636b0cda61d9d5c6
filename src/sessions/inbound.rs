//! Inbound messages: stored (with their media and `message.received` event) before
//! WhatsApp is told they arrived.
//!
//! whatsapp-rust acknowledges a message to the server as soon as it is decrypted unless a
//! durability hook is registered; then the ack waits for the hook. [`Hook`] commits the
//! batch to our database first, so a crash or a database outage means a redelivery, never a
//! lost message: after a failed write the supervisor reconnects the session (with back-off)
//! and WhatsApp redelivers what was not acknowledged. Storing is idempotent (one row per
//! session and WhatsApp id), as a redelivered batch requires.

use std::sync::Arc;

use tokio::sync::Notify;
use whatsapp_rust::Client;
use whatsapp_rust::types::durability_hook::{InboundDurabilityHook, InboundMessage};
use whatsapp_rust::wacore::proto_helpers::MessageExt;

use super::{Inner, Slot, outbound};
use crate::error::Result;
use crate::storage::{inbound, now_ms};

/// Commits a session's inbound messages before whatsapp-rust acknowledges them.
pub(super) struct Hook {
    pub inner: Arc<Inner>,
    pub slot: Arc<Slot>,
    /// Tells this run's supervisor that a write failed (it reconnects for the redelivery).
    pub failed: Arc<Notify>,
}

#[async_trait::async_trait]
impl InboundDurabilityHook for Hook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        for m in batch {
            store(&self.inner, &self.slot, &client, m).await.map_err(|e| {
                // Unacknowledged, WhatsApp redelivers it on the next connection.
                self.failed.notify_one();
                tracing::error!(device = %self.slot.device_id, error = %e, "cannot store inbound message; WhatsApp will redeliver it");
                anyhow::anyhow!("storing an inbound message failed: {e}")
            })?;
        }
        Ok(())
    }
}

pub(super) async fn store(
    inner: &Inner,
    slot: &Slot,
    client: &Arc<Client>,
    m: &InboundMessage,
) -> Result<()> {
    if m.info.source.is_from_me {
        return Ok(()); // sent from the account's other devices, not inbound
    }
    let msg = m.message.get_base_message();
    let info = &m.info;
    let (kind, media) = outbound::inbound_media(client, msg).await;
    // A peer's text may hold U+0000, which PostgreSQL cannot store: refusing the write
    // would have WhatsApp redeliver it forever, so it is replaced (U+FFFD) instead.
    let scrub = |s: String| crate::domain::text::scrub(s);
    let body = msg
        .text_content()
        .or_else(|| msg.get_caption())
        .map(|t| scrub(t.to_owned()));
    if kind == "unknown" && body.is_none() {
        return Ok(()); // protocol messages, reactions and the like are not chat history
    }
    let sender = &info.source.sender;
    let (phone, lid) = if sender.server == whatsapp_rust::Server::Lid {
        (
            info.source
                .sender_alt
                .as_ref()
                .map(|j| scrub(j.user.to_string())),
            Some(scrub(sender.user.to_string())),
        )
    } else {
        (
            Some(scrub(sender.user.to_string())),
            info.source
                .sender_alt
                .as_ref()
                .map(|j| scrub(j.user.to_string())),
        )
    };
    let now = now_ms();
    let media_row = media.map(|blob| crate::storage::media::NewMedia {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: slot.project_id.clone(),
        sha256: crate::crypto::sha256_hex(&blob.data),
        mime_type: scrub(blob.mime_type),
        filename: blob.filename.map(scrub),
        size_bytes: blob.data.len() as i64,
        data: blob.data,
        created_at: now,
    });
    let row = inbound::InboundRow {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: slot.project_id.clone(),
        device_id: slot.device_id.clone(),
        wa_message_id: scrub(info.id.to_string()),
        chat_jid: scrub(info.source.chat.to_string()),
        sender_jid: scrub(sender.to_string()),
        sender_phone: phone,
        sender_lid: lid,
        push_name: Some(scrub(info.push_name.clone())).filter(|p| !p.is_empty()),
        kind: kind.to_owned(),
        body,
        media_id: media_row.as_ref().map(|m| m.id.clone()),
        sent_at: info.timestamp.timestamp_millis(),
        created_at: now,
    };
    // A stop keyword puts the sender on the project's suppression list, with the message.
    let opt_out = row
        .body
        .as_deref()
        .and_then(crate::domain::broadcasts::suppressions::stop_keyword)
        .zip(row.sender_phone.clone())
        .map(
            |(keyword, phone)| crate::storage::suppressions::SuppressionRow {
                project_id: slot.project_id.clone(),
                phone,
                reason: crate::storage::suppressions::STOP_KEYWORD.into(),
                detail: Some(keyword.into()),
                created_at: now,
            },
        );
    slot.write(&inner.db, move |c| {
        let new = inbound::insert_inbound(c, &row, media_row.as_ref())?;
        if let (true, Some(s)) = (new, &opt_out) {
            crate::storage::suppressions::add(c, s)?;
        }
        Ok(new)
    })
    .await
    .map(|_| ())
}
