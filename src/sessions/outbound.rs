//! Sending a session's queued messages, and the media side of WhatsApp messages. A paced
//! message (a campaign's, or any when the project paces every message) is preceded by a
//! typing indicator; with pacing of every message, an ordinary message takes its session's
//! slot here, just before it is sent, or goes back to the queue until its slot
//! (`domain::broadcasts::pacing`).

use std::sync::Arc;
use std::time::Duration;

use whatsapp_rust::Client;
use whatsapp_rust::UploadOptions;
use whatsapp_rust::download::MediaType;
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::waproto::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;

use super::{Inner, SessionState, Slot};
use crate::domain::broadcasts::pacing::{Decision, Policy, SlotRequest, take_slot};
use crate::storage::messages::{MessageRow, queue};
use crate::storage::pacing as pacing_store;
use crate::storage::{media, now_ms};
use crate::values::ProjectId;

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
/// Longest wait for a paced message's gap inside the worker; a longer one puts the message
/// back in the queue until its time.
const MAX_GAP_WAIT_MS: i64 = 10_000;
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
        // One device, one project: its policy once per batch.
        let Some(policy) = policy_of(&inner, &batch[0].project_id).await else {
            // Left to their claims' lease: sending them unpaced could break the policy.
            tokio::time::sleep(CLAIM_RETRY).await;
            continue;
        };
        // Sent one after another (each recipient's in order), each without waiting for the
        // record of the one before: the outcomes are one commit for the batch. A paced
        // message's outcome is recorded at once instead: the next paced message's gap is
        // measured from it.
        let mut outcomes = Vec::with_capacity(batch.len());
        for m in batch {
            if let Some(o) = deliver(&inner, &slot, &client, m, &policy).await {
                outcomes.push(o);
            }
        }
        // One commit of outcomes in flight at a time.
        if let Some(previous) = recording.take() {
            let _ = previous.await;
        }
        recording = Some(tokio::spawn(record(inner.clone(), slot.clone(), outcomes)));
    }
}

/// The project's send policy (stored, else the node's defaults); `None` when it cannot be
/// read now.
async fn policy_of(inner: &Inner, project_id: &ProjectId) -> Option<Policy> {
    let p = project_id.clone();
    match inner.db.run(move |c| pacing_store::get_policy(c, &p)).await {
        Ok(row) => Some(Policy::of(row, &inner.pacing)),
        Err(e) => {
            tracing::warn!(project = %project_id, error = %e, "cannot read the send policy");
            None
        }
    }
}

/// The campaign of a campaign's message (its slot was taken by the campaign dispatcher
/// before it was queued).
fn campaign_of(m: &MessageRow) -> Option<String> {
    let payload = serde_json::from_str::<serde_json::Value>(m.payload.as_deref()?).ok()?;
    payload.get("broadcast_id")?.as_str().map(str::to_owned)
}

/// The gap is kept at the send too: a slot taken when the message was queued does not
/// stop two messages that waited in the queue (a session that was offline, a slow first
/// send) from going out back to back. Waits here for a short remainder, else puts the
/// message back until its time (false: it is not to be sent now).
async fn spaced(
    inner: &Inner,
    slot: &Slot,
    m: &MessageRow,
    policy: &Policy,
    campaign: Option<&str>,
) -> bool {
    let (device, id) = (m.device_id.to_string(), campaign.map(str::to_owned));
    let read = inner
        .db
        .run(move |c| pacing_store::last_sent(c, &device, id.as_deref()))
        .await;
    let (last, campaign_gap) = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(device = %slot.device_id, error = %e, "cannot read the session's pace");
            return false;
        }
    };
    let until = last + campaign_gap.unwrap_or(policy.min_gap_ms);
    let now = now_ms();
    if until <= now {
        return true;
    }
    if until - now <= MAX_GAP_WAIT_MS {
        tokio::time::sleep(Duration::from_millis((until - now) as u64)).await;
        return true;
    }
    let (row, node) = (m.clone(), inner.node.clone());
    let reason = "pacing: the session's gap between messages";
    if let Err(e) = slot
        .write_relaxed(&inner.db, move |c| {
            queue::defer(c, &row, &node, reason, until, now)
        })
        .await
    {
        tracing::warn!(device = %slot.device_id, error = %e, "cannot hold a paced message");
    }
    false
}

/// With pacing of every message, an ordinary message takes its session's slot now or goes
/// back to the queue until it (false: it is not to be sent now).
async fn paced(inner: &Inner, slot: &Slot, m: &MessageRow, policy: &Policy) -> bool {
    let (p, row) = (policy.clone(), m.clone());
    let now = now_ms();
    let decided = slot
        .write(&inner.db, move |c| {
            let (device, chars) = (row.device_id.to_string(), text_chars(&row));
            let req = SlotRequest {
                message_id: Some(&row.id),
                ..SlotRequest::new(&p, &device, &row.recipient, chars)
            };
            take_slot(c, &p, req, now)
        })
        .await;
    match decided {
        Ok(Decision::Go { .. }) => true,
        Ok(Decision::Hold { until, reason }) => {
            let (row, node) = (m.clone(), inner.node.clone());
            if let Err(e) = slot
                .write_relaxed(&inner.db, move |c| {
                    queue::defer(c, &row, &node, &reason, until, now)
                })
                .await
            {
                tracing::warn!(device = %slot.device_id, error = %e, "cannot hold a paced message");
            }
            false
        }
        Err(e) => {
            // Left to its claim's lease rather than sent unpaced.
            tracing::warn!(device = %slot.device_id, error = %e, "pacing failed");
            false
        }
    }
}

fn text_chars(m: &MessageRow) -> usize {
    m.body.as_deref().map_or(0, |b| b.chars().count())
}

/// Shows "typing…" to the recipient for `ms` (the send follows it). A failure only costs
/// the indicator.
async fn show_typing(client: &Client, recipient: &str, ms: i64) {
    if ms <= 0 {
        return;
    }
    let Ok(to) = format!("{recipient}@s.whatsapp.net").parse::<whatsapp_rust::Jid>() else {
        return;
    };
    if let Err(e) = client.chatstate().send_composing(&to).await {
        tracing::debug!(error = %e, "typing indicator not sent");
        return;
    }
    tokio::time::sleep(Duration::from_millis(ms as u64)).await;
}

/// How one claimed message's send ended.
struct Outcome {
    message: MessageRow,
    result: Result<(), Failure>,
    at: i64,
    /// Taken under the send policy: a sent one moves the session's last paced send.
    paced: bool,
}

/// Sends one claimed message; `None` when pacing put it back in the queue, or when its
/// outcome was recorded already (a paced message).
async fn deliver(
    inner: &Arc<Inner>,
    slot: &Arc<Slot>,
    client: &Arc<Client>,
    m: MessageRow,
    policy: &Policy,
) -> Option<Outcome> {
    let campaign = campaign_of(&m);
    let paced = campaign.is_some() || policy.all_messages;
    if paced && !spaced(inner, slot, &m, policy, campaign.as_deref()).await {
        return None;
    }
    if policy.all_messages && campaign.is_none() && !self::paced(inner, slot, &m, policy).await {
        return None;
    }
    if paced {
        show_typing(client, &m.recipient, policy.typing_ms(text_chars(&m))).await;
    }
    let wa_id = wa_message_id(&m.id);
    let result = match tokio::time::timeout(SEND_TIMEOUT, send_one(inner, client, &m, &wa_id)).await
    {
        Ok(r) => r,
        Err(_) => Err(Failure::Transient("send timed out".into())),
    };
    let outcome = Outcome {
        message: m,
        result,
        at: now_ms(),
        paced,
    };
    if !paced {
        return Some(outcome);
    }
    record(inner.clone(), slot.clone(), vec![outcome]).await;
    None
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
                        if o.paced {
                            pacing_store::sent_paced(c, m.device_id.as_ref(), now)?;
                            queue::clear_pacing_reason(c, &claim)?;
                        }
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
