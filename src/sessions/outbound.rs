//! Sending a session's queued messages, and the media side of WhatsApp messages.

use std::sync::Arc;
use std::time::Duration;

use whatsapp_rust::Client;
use whatsapp_rust::UploadOptions;
use whatsapp_rust::download::MediaType;
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::waproto::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;

use super::{Inner, SessionState, Slot};
use crate::storage::messages::{MessageRow, queue};
use crate::storage::{media, now_ms};

/// Messages claimed per round.
const BATCH: i64 = 16;
/// A claim's lease: longer than the slowest send (a 10 MiB upload) by a margin.
const LEASE_MS: i64 = 180_000;
/// How long one send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// After this long without a server ack a written message is sent again (same id).
const ACK_TIMEOUT_MS: i64 = 60_000;
/// Pause after a failed claim (the database is down or busy).
const CLAIM_RETRY: Duration = Duration::from_secs(2);
/// Largest inbound media downloaded into storage.
const MAX_INBOUND_MEDIA: u64 = 16 * 1024 * 1024;

/// The WhatsApp message id of one of our messages. Deterministic, so a resend after a
/// crash or a lost ack carries the same id and the receiver de-duplicates it.
pub fn wa_message_id(message_id: &str) -> String {
    let h = crate::crypto::sha256_hex(message_id.as_bytes());
    format!("3EB0{}", h[..16].to_ascii_uppercase())
}

enum Failure {
    /// Worth another attempt later.
    Transient(String),
    /// Will never succeed: `(code, message)`.
    Permanent(&'static str, String),
}

pub(super) async fn run(inner: Arc<Inner>, slot: Arc<Slot>, client: Arc<Client>) {
    let mut state = slot.snapshot.subscribe();
    // The previous batch's outcomes, committing while the next batch is claimed and sent.
    let mut recording: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        if state.borrow_and_update().state != SessionState::Connected {
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        let (device, node) = (slot.device_id.clone(), inner.node.clone());
        // The claim records each message's WhatsApp id in its own commit: the server ack
        // may arrive before `send` returns, and must find the message by it.
        let batch = match slot
            .write_relaxed(&inner.db, move |c| {
                let batch = queue::claim(c, &device, &node, BATCH, LEASE_MS, now_ms())?;
                for m in &batch {
                    queue::set_wa_id(c, &m.claim(&node), &wa_message_id(&m.id))?;
                }
                Ok(batch)
            })
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(device = %slot.device_id, error = %e, "claim failed");
                tokio::time::sleep(CLAIM_RETRY).await;
                continue;
            }
        };
        if batch.is_empty() {
            // No timer: an accept here, a forwarded wake or the node's due scan
            // (`SessionManager::run_due_scan`) wakes an idle worker.
            tokio::select! {
                _ = slot.wake.notified() => {}
                _ = state.changed() => {}
            }
            continue;
        }
        // Durable before anything is sent: the claim, and every accept it saw (rows are
        // visible a moment before their flush, see `storage::durable`). An empty claim (a
        // wake with nothing due yet) waits for no disk.
        if let Err(e) = inner.db.make_durable().await {
            tracing::warn!(device = %slot.device_id, error = %e, "claim not durable");
            tokio::time::sleep(CLAIM_RETRY).await;
            continue;
        }
        // Sent one after another (each recipient's in order), each without waiting for the
        // record of the one before: the outcomes are one commit for the batch.
        let mut outcomes = Vec::with_capacity(batch.len());
        for m in batch {
            outcomes.push(deliver(&inner, &client, m).await);
        }
        // One commit of outcomes in flight at a time.
        if let Some(previous) = recording.take() {
            let _ = previous.await;
        }
        recording = Some(tokio::spawn(record(inner.clone(), slot.clone(), outcomes)));
    }
}

/// How one claimed message's send ended.
struct Outcome {
    message: MessageRow,
    result: Result<(), Failure>,
    at: i64,
}

async fn deliver(inner: &Inner, client: &Arc<Client>, m: MessageRow) -> Outcome {
    let wa_id = wa_message_id(&m.id);
    let result = match tokio::time::timeout(SEND_TIMEOUT, send_one(inner, client, &m, &wa_id)).await
    {
        Ok(r) => r,
        Err(_) => Err(Failure::Transient("send timed out".into())),
    };
    Outcome {
        message: m,
        result,
        at: now_ms(),
    }
}

/// Records a batch's outcomes in one fenced transaction, each fenced by its claim. It does
/// not wait for the disk (`Db::run_relaxed`): one lost to a crash leaves the message queued
/// under its claim, and it is sent again under the same id. A message acked before this
/// commit is `sent` already and its outcome changes nothing.
async fn record(inner: Arc<Inner>, slot: Arc<Slot>, outcomes: Vec<Outcome>) {
    let node = inner.node.clone();
    for o in &outcomes {
        if let Err(Failure::Transient(msg)) = &o.result {
            tracing::info!(device = %slot.device_id, message = %o.message.id, error = %msg, "send failed; will retry");
        }
    }
    let recorded = slot
        .write_relaxed(&inner.db, move |c| {
            for o in outcomes {
                let (m, now) = (o.message, o.at);
                let claim = m.claim(&node);
                match o.result {
                    // Written: wait for the server ack; without one in time it is resent
                    // (same id).
                    Ok(()) => {
                        let wa_id = wa_message_id(&m.id);
                        queue::mark_dispatched(c, &claim, &wa_id, now + ACK_TIMEOUT_MS)?;
                    }
                    Err(Failure::Permanent(code, msg)) => {
                        queue::fail(c, &claim, code, &msg, now)?;
                    }
                    Err(Failure::Transient(msg)) => {
                        let retry_at = now + queue::backoff_ms(m.attempts);
                        queue::retry_later(c, &m, &node, &msg, retry_at, now)?;
                    }
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(device = %slot.device_id, error = %e, "cannot record the send outcomes");
    }
}

fn media_type(kind: &str) -> Option<MediaType> {
    match kind {
        "image" => Some(MediaType::Image),
        "video" => Some(MediaType::Video),
        "audio" => Some(MediaType::Audio),
        "document" => Some(MediaType::Document),
        _ => None,
    }
}

async fn send_one(
    inner: &Inner,
    client: &Arc<Client>,
    m: &MessageRow,
    wa_id: &str,
) -> Result<(), Failure> {
    let to: whatsapp_rust::Jid = format!("{}@s.whatsapp.net", m.recipient)
        .parse()
        .map_err(|_| Failure::Permanent("INVALID_RECIPIENT", "not a WhatsApp address".into()))?;
    let message = match (media_type(&m.kind), &m.media_id) {
        (None, _) => wa::Message {
            conversation: m.body.clone(),
            ..Default::default()
        },
        (Some(kind), Some(media_id)) => {
            let mid = media_id.clone();
            let blob = inner
                .db
                .run(move |c| media::media_bytes(c, &mid))
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?
                .ok_or(Failure::Permanent(
                    "MEDIA_MISSING",
                    "the message's media is gone".into(),
                ))?;
            let up = client
                .upload(blob.data, kind, UploadOptions::default())
                .await
                .map_err(|e| Failure::Transient(format!("media upload failed: {e}")))?;
            media_message(kind, &up, blob.mime_type, blob.filename, m.body.clone())
        }
        (Some(_), None) => {
            return Err(Failure::Permanent(
                "MEDIA_MISSING",
                "media message without media".into(),
            ));
        }
    };
    client
        .send_message_with_options(to, message, SendOptions::default().with_message_id(wa_id))
        .await
        .map(|_| ())
        .map_err(|e| Failure::Transient(format!("send failed: {e}")))
}

fn media_message(
    kind: MediaType,
    up: &whatsapp_rust::upload::UploadResponse,
    mime: String,
    filename: Option<String>,
    caption: Option<String>,
) -> wa::Message {
    let base = UploadFields::from_upload(up, mime);
    // The fields every media message shares, plus the per-type extras.
    macro_rules! media {
        ($field:ident, $ty:ident; $($k:ident = $v:expr),*) => {
            wa::Message {
                $field: MessageField::some(wa::message::$ty {
                    url: base.url,
                    direct_path: base.direct_path,
                    media_key: base.media_key,
                    file_enc_sha256: base.file_enc_sha256,
                    file_sha256: base.file_sha256,
                    file_length: base.file_length,
                    media_key_timestamp: base.media_key_timestamp,
                    mimetype: base.mimetype,
                    $($k: $v,)*
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
    }
    match kind {
        MediaType::Image => media!(image_message, ImageMessage; caption = caption),
        MediaType::Video => media!(video_message, VideoMessage; caption = caption),
        MediaType::Audio => media!(audio_message, AudioMessage;),
        _ => media!(document_message, DocumentMessage; file_name = filename, caption = caption),
    }
}

/// The upload fields every media message carries.
struct UploadFields {
    url: Option<String>,
    direct_path: Option<String>,
    media_key: Option<Vec<u8>>,
    file_enc_sha256: Option<Vec<u8>>,
    file_sha256: Option<Vec<u8>>,
    file_length: Option<u64>,
    media_key_timestamp: Option<i64>,
    mimetype: Option<String>,
}

impl UploadFields {
    fn from_upload(up: &whatsapp_rust::upload::UploadResponse, mime: String) -> Self {
        UploadFields {
            url: Some(up.url.clone()),
            direct_path: Some(up.direct_path.clone()),
            media_key: Some(up.media_key.to_vec()),
            file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
            file_sha256: Some(up.file_sha256.to_vec()),
            file_length: Some(up.file_length),
            media_key_timestamp: Some(up.media_key_timestamp),
            mimetype: Some(mime),
        }
    }
}

/// The kind of an inbound message, and its media downloaded (mime, filename, bytes) when it
/// has any within the size bound.
pub(super) async fn inbound_media(
    client: &Arc<Client>,
    msg: &wa::Message,
) -> (&'static str, Option<media::MediaBlob>) {
    let timeout = Duration::from_secs(60);
    macro_rules! grab {
        ($m:expr, $kind:expr, $name:expr) => {{
            let m = $m;
            let mime = m.mimetype.clone().unwrap_or_else(|| "application/octet-stream".into());
            if m.file_length.unwrap_or(0) > MAX_INBOUND_MEDIA {
                return ($kind, None);
            }
            let data = match tokio::time::timeout(timeout, client.download(m)).await {
                Ok(Ok(data)) => Some(media::MediaBlob { mime_type: mime, filename: $name, data }),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "inbound media download failed");
                    None
                }
                Err(_) => None,
            };
            return ($kind, data);
        }};
    }
    if msg.conversation.is_some() || msg.extended_text_message.is_set() {
        return ("text", None);
    }
    if let Some(m) = msg.image_message.as_option() {
        grab!(m, "image", None)
    }
    if let Some(m) = msg.video_message.as_option() {
        grab!(m, "video", None)
    }
    if let Some(m) = msg.audio_message.as_option() {
        grab!(m, "audio", None)
    }
    if let Some(m) = msg.document_message.as_option() {
        grab!(m, "document", m.file_name.clone())
    }
    ("unknown", None)
}
