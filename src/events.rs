//! The events wagate reports (to webhooks and the event stream) and their JSON payloads.
//!
//! A payload is built once, when the event is recorded in the transaction of the change that
//! caused it, and stored verbatim: every delivery and every replay sends the same bytes.
//! `message.received` is the SAK document's shape, with extra fields only added.

use serde_json::{Map, Value, json};

use crate::values::{MessageStatus, ProjectId, SessionId};

pub const MESSAGE_RECEIVED: &str = "message.received";
pub const MESSAGE_STATUS: &str = "message.status";
pub const SESSION_STATUS: &str = "session.status";
pub const SESSION_HEALTH: &str = "session.health";
pub const BROADCAST_STATUS: &str = "broadcast.status";

/// The event names a webhook can subscribe to (besides `*`).
pub const KINDS: [&str; 5] = [
    MESSAGE_RECEIVED,
    MESSAGE_STATUS,
    SESSION_STATUS,
    SESSION_HEALTH,
    BROADCAST_STATUS,
];

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub project_id: ProjectId,
    /// The session it concerns (every event kind has one today).
    pub device_id: Option<SessionId>,
    pub kind: &'static str,
    /// Event-specific fields; `event`, `eventId`, `occurredAt` and `sessionId` are added.
    pub fields: Map<String, Value>,
}

/// Completes a payload with the fields every event carries.
pub fn envelope(
    id: &str,
    kind: &str,
    device_id: Option<&str>,
    at_ms: i64,
    fields: Map<String, Value>,
) -> Value {
    let mut out = Map::new();
    out.insert("event".into(), kind.into());
    out.insert("eventId".into(), id.into());
    out.insert("occurredAt".into(), rfc3339(at_ms).into());
    if let Some(d) = device_id {
        out.insert("sessionId".into(), d.into());
    }
    for (k, v) in fields {
        out.insert(k, v);
    }
    Value::Object(out)
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What `message.received` says about one inbound message.
pub struct Inbound<'a> {
    pub wa_message_id: &'a str,
    pub chat_jid: &'a str,
    pub sender_jid: &'a str,
    pub sender_phone: Option<&'a str>,
    pub sender_lid: Option<&'a str>,
    pub push_name: Option<&'a str>,
    pub kind: &'a str,
    pub body: Option<&'a str>,
    pub sent_at_ms: i64,
    pub media: Option<MediaRef<'a>>,
}

/// Inbound media is referenced, never inlined: the receiver downloads it when it wants it.
pub struct MediaRef<'a> {
    pub id: &'a str,
    pub mime_type: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub filename: Option<&'a str>,
}

/// The WhatsApp (Baileys-style) message type names the SAK payload uses.
fn wa_type(kind: &str) -> &str {
    match kind {
        "text" => "conversation",
        "image" => "imageMessage",
        "video" => "videoMessage",
        "audio" => "audioMessage",
        "document" => "documentMessage",
        "sticker" => "stickerMessage",
        other => other,
    }
}

pub fn message_received(m: &Inbound<'_>) -> Map<String, Value> {
    // `from` is the phone JID when known (as the SAK document shows), else the LID JID.
    let from = match m.sender_phone {
        Some(p) => format!("{p}@s.whatsapp.net"),
        None => m.sender_jid.to_owned(),
    };
    let mut v = object(json!({
        "from": from,
        "from_jid": from,
        "from_number": m.sender_phone.map(|p| format!("+{p}")),
        "wa_id": m.sender_phone,
        "from_lid": m.sender_lid.map(|l| format!("{l}@lid")),
        "chatId": m.chat_jid,
        "messageId": m.wa_message_id,
        "timestamp": m.sent_at_ms.div_euclid(1000),
        "type": wa_type(m.kind),
        "text": m.body,
        "pushName": m.push_name,
    }));
    if m.kind != "text" {
        v.insert("caption".into(), m.body.into());
    }
    if let Some(media) = &m.media {
        v.insert(
            "media".into(),
            json!({
                "id": media.id,
                "mimetype": media.mime_type,
                "size": media.size,
                "sha256": media.sha256,
                "filename": media.filename,
                "url": format!("/api/v1/media/{}", media.id),
            }),
        );
    }
    v
}

/// What `message.status` says about one outbound message.
pub struct Status<'a> {
    pub message_id: &'a str,
    pub device_code: &'a str,
    pub wa_message_id: Option<&'a str>,
    pub recipient: &'a str,
    pub status: MessageStatus,
    /// The caller's `payload` metadata, stored as JSON text.
    pub payload: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub at_ms: i64,
}

pub fn message_status(s: &Status<'_>) -> Map<String, Value> {
    let payload = s
        .payload
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .unwrap_or(Value::Null);
    let mut v = object(json!({
        "messageId": s.message_id,
        "deviceCode": s.device_code,
        "waMessageId": s.wa_message_id,
        "status": s.status.as_str(),
        "recipient": s.recipient,
        "to": s.recipient,
        "payload": payload,
        "timestamp": s.at_ms.div_euclid(1000),
    }));
    if s.status == MessageStatus::Failed {
        v.insert(
            "error".into(),
            json!({"code": s.error_code, "message": s.error_message}),
        );
    }
    v
}

/// What `session.status` says about a session's state change.
pub struct SessionChange<'a> {
    pub status: &'a str,
    pub reason: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub push_name: Option<&'a str>,
    /// The QR code to show, for `qr`.
    pub qr: Option<&'a str>,
}

pub fn session_status(s: &SessionChange<'_>) -> Map<String, Value> {
    let mut v = object(json!({
        "status": s.status,
        "connected": s.status == "connected",
        "reason": s.reason,
        "phoneNumber": s.phone,
        "pushName": s.push_name,
    }));
    if let Some(qr) = s.qr {
        v.insert("qrCode".into(), qr.into());
    }
    v
}

/// What `session.health` says: a session became healthy or unhealthy for campaigns.
pub fn session_health(health: &str, reason: Option<&str>, since_ms: i64) -> Map<String, Value> {
    object(json!({
        "health": health,
        "reason": reason,
        "since": rfc3339(since_ms),
    }))
}

/// What `broadcast.status` says about a campaign's state change.
pub struct BroadcastChange<'a> {
    pub broadcast_id: &'a str,
    pub name: &'a str,
    pub state: &'a str,
    /// Why (a pause by health, by its user…), when there is one.
    pub reason: Option<&'a str>,
    /// Recipients by status (`created`, `pending`, `sent`, …).
    pub counts: Value,
}

pub fn broadcast_status(b: &BroadcastChange<'_>) -> Map<String, Value> {
    object(json!({
        "broadcastId": b.broadcast_id,
        "name": b.name,
        "state": b.state,
        "reason": b.reason,
        "counts": b.counts,
    }))
}

/// Whether a webhook's filter (`*` or a list of names) takes an event kind.
pub fn filter_matches(filter: &str, kind: &str) -> bool {
    filter.split(',').any(|f| f == "*" || f == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter() {
        assert!(filter_matches("*", MESSAGE_STATUS));
        assert!(filter_matches(
            "message.received,session.status",
            SESSION_STATUS
        ));
        assert!(!filter_matches("message.received", MESSAGE_STATUS));
    }

    #[test]
    fn received_has_the_sak_fields() {
        let f = message_received(&Inbound {
            wa_message_id: "3EB0AA",
            chat_jid: "918484862949@s.whatsapp.net",
            sender_jid: "1234@lid",
            sender_phone: Some("918484862949"),
            sender_lid: Some("1234"),
            push_name: Some("Customer Name"),
            kind: "text",
            body: Some("hi"),
            sent_at_ms: 1_734_672_000_123,
            media: None,
        });
        let v = envelope("e1", MESSAGE_RECEIVED, Some("s1"), 0, f);
        assert_eq!(v["event"], "message.received");
        assert_eq!(v["sessionId"], "s1");
        assert_eq!(v["from"], "918484862949@s.whatsapp.net");
        assert_eq!(v["from_number"], "+918484862949");
        assert_eq!(v["wa_id"], "918484862949");
        assert_eq!(v["from_lid"], "1234@lid");
        assert_eq!(v["timestamp"], 1_734_672_000);
        assert_eq!(v["type"], "conversation");
        assert_eq!(v["text"], "hi");
        assert_eq!(v["pushName"], "Customer Name");
        assert!(v.get("caption").is_none());
    }
}
