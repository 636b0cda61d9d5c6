//! Sending messages into the durable queue and reading their status.

use serde_json::Value;

use super::Gateway;
use super::auth::Caller;
use super::media::{self, MessageKind};
use super::principal::Principal;
use super::text::{no_nul, no_nul_json, no_nul_opt};
use crate::crypto;
use crate::error::{Error, Result};
use crate::storage::accept::{AcceptItem, Accepted, IdempotencyKey, Limits};
use crate::storage::media::NewMedia;
use crate::storage::messages::{self, ListFilter, MessageRow, NewMessage};
use crate::storage::now_ms;
use crate::values::{MessageStatus, SessionId};

/// WhatsApp's own limit on a text message.
pub const MAX_TEXT_CHARS: usize = 65_536;
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
const MAX_REQUEST_ID_LEN: usize = 255;

#[derive(Debug, Clone, Default)]
pub struct SendCommand {
    pub recipient: String,
    /// `text` when absent.
    pub kind: Option<String>,
    pub text: Option<String>,
    pub media: Option<MediaUpload>,
    pub payload: Option<Value>,
    pub device_code: Option<String>,
    /// Idempotency key (`X-REQUEST-ID`).
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MediaUpload {
    pub data: Vec<u8>,
    pub filename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    pub id: String,
    pub status: MessageStatus,
    pub device_code: String,
    /// The recipient as stored (normalized).
    pub recipient: String,
    /// The session (device) that sends it.
    pub session_id: SessionId,
    /// True when an earlier request with the same idempotency key created the message.
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct MessageView {
    pub seq: i64,
    pub id: String,
    pub status: MessageStatus,
    pub recipient: String,
    pub device_code: String,
    pub kind: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub payload: Option<Value>,
}

impl From<MessageRow> for MessageView {
    fn from(r: MessageRow) -> Self {
        // A message still queued for a retry carries its last error only as a hint.
        let error_message = if r.status == MessageStatus::Failed {
            r.error_message
        } else {
            None
        };
        MessageView {
            seq: r.seq,
            payload: r
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            id: r.id,
            status: r.status,
            recipient: r.recipient,
            device_code: r.device_code,
            kind: r.kind,
            created_at: r.created_at,
            sent_at: r.sent_at,
            delivered_at: r.delivered_at,
            read_at: r.read_at,
            failed_at: r.failed_at,
            error_code: r.error_code,
            error_message,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
    pub device_code: Option<String>,
    pub status: Option<String>,
}

pub struct MessagePage {
    pub messages: Vec<MessageView>,
    pub next_page_token: Option<String>,
}

/// RFC 3339 with offset, e.g. `2026-03-02T12:00:00+00:00`.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Accepts `+62 812-3456-7890` style input; WhatsApp numbers are 8 to 15 digits.
pub fn normalize_recipient(raw: &str) -> Result<String> {
    let raw = raw.trim();
    if raw.is_empty()
        || !raw
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        return Err(Error::InvalidRecipient);
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if !(8..=15).contains(&digits.len()) {
        return Err(Error::InvalidRecipient);
    }
    Ok(digits)
}

/// SAK phone numbers: non-digits stripped; a 10-digit number without the default country
/// code gets it; 8 to 15 digits remain.
pub fn normalize_phone(raw: &str, default_country_code: &str) -> Result<String> {
    no_nul("phone number", raw)?;
    let mut digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if digits.len() == 10 && !digits.starts_with(default_country_code) {
        digits = format!("{default_country_code}{digits}");
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(Error::InvalidPhoneNumber);
    }
    Ok(digits)
}

fn validate_request_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_REQUEST_ID_LEN
        || !id.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err(Error::InvalidRequest(format!(
            "X-REQUEST-ID must be 1 to {MAX_REQUEST_ID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

impl Gateway {
    /// Validates and durably queues a message. Returns only after the commit.
    pub async fn send(&self, caller: &Caller, cmd: SendCommand) -> Result<SendReceipt> {
        let s = self.settings();
        no_nul_opt("X-DEVICE-CODE", cmd.device_code.as_deref())?;
        no_nul_opt("X-REQUEST-ID", cmd.request_id.as_deref())?;
        no_nul("recipient", &cmd.recipient)?;
        no_nul_opt("type", cmd.kind.as_deref())?;
        no_nul_opt("message", cmd.text.as_deref())?;
        if let Some(p) = &cmd.payload {
            no_nul_json("payload", p)?;
        }
        no_nul_opt(
            "media file name",
            cmd.media.as_ref().and_then(|m| m.filename.as_deref()),
        )?;
        let device_code = cmd
            .device_code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(Error::MissingDeviceCode)?;
        let kind = MessageKind::parse(cmd.kind.as_deref().unwrap_or("text"))?;
        let recipient = normalize_recipient(&cmd.recipient)?;
        let text = cmd.text.filter(|t| !t.trim().is_empty());
        if let Some(t) = &text
            && t.chars().count() > MAX_TEXT_CHARS
        {
            return Err(Error::MessageTooLong(MAX_TEXT_CHARS));
        }
        let payload = match cmd.payload {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => {
                let s = v.to_string();
                if s.len() > MAX_PAYLOAD_BYTES {
                    return Err(Error::InvalidPayload(MAX_PAYLOAD_BYTES));
                }
                Some(s)
            }
            Some(_) => return Err(Error::InvalidPayload(MAX_PAYLOAD_BYTES)),
        };
        if let Some(id) = &cmd.request_id {
            validate_request_id(id)?;
        }
        let upload = match (kind, cmd.media) {
            (MessageKind::Text, _) if text.is_none() => return Err(Error::MessageRequired),
            (MessageKind::Text, Some(_)) => {
                return Err(Error::InvalidRequest(
                    "type text takes no media file; set type to the media's type".into(),
                ));
            }
            (MessageKind::Text, None) => None,
            (_, None) => return Err(Error::MediaRequired),
            (_, Some(m)) => {
                let format = media::validate(kind, &m.data, s.max_media_bytes)?;
                Some((m, format))
            }
        };
        let device = self.device_for(caller, device_code).await?;

        let now = now_ms();
        let project = &caller.project.row;
        let message_id = uuid::Uuid::now_v7().to_string();
        let new_media = upload.map(|(m, format)| NewMedia {
            id: uuid::Uuid::now_v7().to_string(),
            project_id: project.id.clone(),
            sha256: crypto::sha256_hex(&m.data),
            mime_type: format.mime().to_owned(),
            filename: m
                .filename
                .filter(|f| !f.is_empty())
                .map(|f| f.chars().take(255).collect()),
            size_bytes: m.data.len() as i64,
            data: m.data,
            created_at: now,
        });
        let idempotency = cmd.request_id.map(|key| IdempotencyKey {
            fingerprint: crypto::sha256_hex(
                serde_json::json!([
                    device.code,
                    recipient,
                    kind.as_str(),
                    text,
                    new_media.as_ref().map(|m| &m.sha256),
                    payload
                ])
                .to_string()
                .as_bytes(),
            ),
            key,
            ttl_ms: s.idempotency_ttl.as_millis() as i64,
        });
        let stored_recipient = recipient.clone();
        let item = AcceptItem {
            limits: Limits {
                project_id: project.id.clone(),
                per_minute: project.rate_limit_per_minute,
                monthly: project.monthly_quota,
                suspended: project.suspended,
            },
            idempotency,
            message: NewMessage {
                id: message_id,
                project_id: project.id.clone(),
                device_id: device.id.clone(),
                device_code: device.code.clone(),
                recipient,
                kind: kind.as_str().to_owned(),
                body: text,
                media_id: new_media.as_ref().map(|m| m.id.clone()),
                payload,
                status: MessageStatus::Queued,
                max_attempts: s.max_attempts,
                available_at: now,
                created_at: now,
                expires_at: now + s.message_ttl.as_millis() as i64,
            },
            media: new_media,
        };
        let outcome = self.inner.writer.submit(item).await;
        let kind_label = kind.as_str();
        match &outcome {
            Ok(Accepted::Created { .. }) => {
                metrics::counter!("wagate_messages_accepted_total", "type" => kind_label)
                    .increment(1)
            }
            Ok(Accepted::Replayed { .. }) => {
                metrics::counter!("wagate_messages_replayed_total").increment(1)
            }
            Err(e) => {
                metrics::counter!("wagate_messages_rejected_total", "code" => e.code()).increment(1)
            }
        }
        let outcome = outcome?;
        if matches!(outcome, Accepted::Created { .. }) {
            self.sessions().notify_outbound(&device.id);
        }
        Ok(match outcome {
            Accepted::Created { id, device_code } => SendReceipt {
                id,
                status: MessageStatus::Queued,
                device_code,
                recipient: stored_recipient,
                session_id: device.id.clone(),
                replayed: false,
            },
            Accepted::Replayed {
                id,
                device_code,
                status,
            } => SendReceipt {
                id,
                status,
                device_code,
                // A replay carries the same recipient and device, else it is a conflict.
                recipient: stored_recipient,
                session_id: device.id.clone(),
                replayed: true,
            },
        })
    }

    pub async fn message_status(&self, caller: &Caller, id: &str) -> Result<MessageView> {
        let id = uuid::Uuid::parse_str(id.trim())
            .map_err(|_| Error::MessageNotFound)?
            .to_string();
        let pid = caller.project.row.id.clone();
        let row = self
            .db()
            .run(move |c| messages::by_id(c, &pid, &id))
            .await?;
        row.map(Into::into).ok_or(Error::MessageNotFound)
    }

    pub async fn list_messages(&self, caller: &Caller, q: ListQuery) -> Result<MessagePage> {
        no_nul_opt("device_code", q.device_code.as_deref())?;
        let limit = q.page_size.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(Error::InvalidRequest(
                "page_size must be between 1 and 500".into(),
            ));
        }
        let before_seq = match q.page_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(
                t.parse::<i64>()
                    .map_err(|_| Error::InvalidRequest("invalid page_token".into()))?,
            ),
            None => None,
        };
        let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some(MessageStatus::parse(name).ok_or_else(|| {
                Error::InvalidRequest(
                    "status must be queued, sent, delivered, read or failed".into(),
                )
            })?),
        };
        let filter = ListFilter {
            device_code: q.device_code.filter(|d| !d.is_empty()),
            status,
            before_seq,
            limit: limit + 1,
        };
        let pid = caller.project.row.id.clone();
        let mut rows = self
            .db()
            .run(move |c| messages::list(c, &pid, &filter))
            .await?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.seq.to_string())
        } else {
            None
        };
        Ok(MessagePage {
            messages: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }
}

impl Gateway {
    /// Sends as `principal`: a signed (RK) call addresses its device by code and gives RK's
    /// strict digits; a SAK credential sends through its acting session (its own, or the one
    /// `session_id` names) and its numbers follow the SAK rules ([`normalize_phone`]).
    pub async fn send_as(
        &self,
        principal: &Principal,
        session_id: Option<&str>,
        mut cmd: SendCommand,
    ) -> Result<SendReceipt> {
        if principal.uses_sak_numbers() {
            let session = principal.acting_session(self, session_id).await?;
            cmd.recipient = normalize_phone(&cmd.recipient, &self.settings().default_country_code)?;
            cmd.device_code = Some(session.code.clone());
        } else if cmd.device_code.is_none()
            && let Some(id) = session_id.filter(|s| !s.is_empty())
        {
            cmd.device_code = Some(self.own_session(principal.caller(), id).await?.code);
        }
        self.send(principal.caller(), cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients() {
        assert_eq!(
            normalize_recipient("6281234567890").unwrap(),
            "6281234567890"
        );
        assert_eq!(
            normalize_recipient("+62 812-3456-7890").unwrap(),
            "6281234567890"
        );
        assert!(normalize_recipient("12345").is_err());
        assert!(normalize_recipient("62812abc").is_err());
        assert!(normalize_recipient("1234567890123456").is_err());
        // The SAK document's examples.
        assert_eq!(
            normalize_phone("+919876543210", "91").unwrap(),
            "919876543210"
        );
        assert_eq!(
            normalize_phone("919876543210", "91").unwrap(),
            "919876543210"
        );
        assert_eq!(normalize_phone("9876543210", "91").unwrap(), "919876543210");
        assert_eq!(
            normalize_phone("(987) 654-3210", "91").unwrap(),
            "919876543210"
        );
        assert!(normalize_phone("1234567", "91").is_err());
        assert!(normalize_phone("1234567890123456", "91").is_err());
    }
}
