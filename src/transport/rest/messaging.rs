//! `POST /api/v1/send`, `GET /api/v1/status/{id}`, `GET /api/v1/messages` (RK Connect).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::{header_str, header_text, signed};
use super::envelope::{ApiResult, ErrorBody, success};
use super::extract::{Path, Query};
use crate::domain::Gateway;
use crate::domain::messaging::{ListQuery, MediaUpload, MessageView, SendCommand, rfc3339};
use crate::error::Error;

/// JSON form of a send request (type `text`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendJson {
    /// Digits with country code, without "+" (a JSON number is accepted too).
    #[schema(value_type = String, example = "6281234567890")]
    pub recipient: Option<Value>,
    /// text (default), image, document, video or audio.
    #[serde(rename = "type")]
    #[schema(example = "text")]
    pub kind: Option<String>,
    #[schema(example = "Hello from RK Connect")]
    pub message: Option<String>,
    /// Your metadata, stored with the message.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
}

/// multipart/form-data form of a send request (media types).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SendForm {
    recipient: String,
    #[schema(rename = "type")]
    kind: String,
    /// Caption.
    message: Option<String>,
    /// JSON object as text.
    payload: Option<String>,
    /// The file: jpeg, png, webp, pdf, doc, docx, mp4, mp3 or ogg; at most 10 MiB.
    #[schema(value_type = String, format = Binary)]
    media: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendData {
    #[schema(example = "550e8400-e29b-41d4-a716-446655440000")]
    pub id: String,
    #[schema(example = "queued")]
    pub status: String,
    #[schema(example = "RK-XXXX")]
    pub device: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusData {
    pub id: String,
    /// queued, sent, delivered, read or failed.
    pub status: String,
    pub recipient: String,
    pub device_code: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 with offset.
    pub created_at: String,
    pub sent_at: Option<String>,
    pub delivered_at: Option<String>,
    pub read_at: Option<String>,
    pub failed_at: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
}

impl From<MessageView> for StatusData {
    fn from(m: MessageView) -> Self {
        StatusData {
            id: m.id,
            status: m.status,
            recipient: m.recipient,
            device_code: m.device_code,
            kind: m.kind,
            created_at: rfc3339(m.created_at),
            sent_at: m.sent_at.map(rfc3339),
            delivered_at: m.delivered_at.map(rfc3339),
            read_at: m.read_at.map(rfc3339),
            failed_at: m.failed_at.map(rfc3339),
            error_code: m.error_code,
            error_message: m.error_message,
            payload: m.payload,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<StatusData>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// 1..500, default 50.
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
    pub device_code: Option<String>,
    pub status: Option<String>,
}

/// A GET is signed over its (normally empty) body; it has no use for a large one.
const MAX_GET_BODY_BYTES: usize = 64 * 1024;

fn recipient_text(v: Option<Value>) -> Result<String, Error> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(Error::InvalidRecipient),
    }
}

async fn decode_send(headers: &HeaderMap, body: Bytes) -> Result<SendCommand, Error> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        let j: SendJson = super::extract::json_object(&body)?;
        return Ok(SendCommand {
            recipient: recipient_text(j.recipient)?,
            kind: j.kind,
            text: j.message,
            payload: j.payload,
            ..Default::default()
        });
    }
    if mime == "multipart/form-data" {
        return decode_multipart(content_type, body).await;
    }
    Err(Error::UnsupportedContentType)
}

async fn decode_multipart(content_type: &str, body: Bytes) -> Result<SendCommand, Error> {
    let mut cmd = SendCommand::default();
    for part in super::form::parse(content_type, body).await? {
        match part.name.as_str() {
            "media" => {
                cmd.media = Some(MediaUpload {
                    data: part.data.to_vec(),
                    filename: part.filename,
                })
            }
            "recipient" => cmd.recipient = part.text()?,
            "type" => cmd.kind = Some(part.text()?),
            "message" => cmd.text = Some(part.text()?),
            "payload" => {
                let text = part.text()?;
                if !text.trim().is_empty() {
                    let v: Value = serde_json::from_str(&text).map_err(|_| {
                        Error::InvalidPayload(crate::domain::messaging::MAX_PAYLOAD_BYTES)
                    })?;
                    cmd.payload = Some(v);
                }
            }
            _ => {} // unknown fields are ignored, as JSON's are
        }
    }
    Ok(cmd)
}

/// Send a message. It is durably queued before the 201 is answered.
#[utoipa::path(
    post,
    path = "/api/v1/send",
    tag = "messages",
    request_body(content(
        (SendJson = "application/json"),
        (SendForm = "multipart/form-data"),
    )),
    params(
        ("X-API-KEY" = String, Header, description = "project API key"),
        ("X-TIMESTAMP" = String, Header, description = "Unix seconds"),
        ("X-SIGNATURE" = String, Header, description = "hex HMAC-SHA256(api_secret, api_key + timestamp + raw_body)"),
        ("X-DEVICE-CODE" = String, Header, description = "device that sends, e.g. RK-XXXX"),
        ("X-REQUEST-ID" = Option<String>, Header, description = "idempotency key (24 h)"),
    ),
    responses(
        (status = 201, description = "queued", body = inline(super::envelope::Success<SendData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn send(
    State(gw): State<Gateway>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let (caller, body) = signed(&gw, &method, &uri, &headers, body, super::MAX_BODY_BYTES).await?;
    let mut cmd = decode_send(&headers, body).await?;
    cmd.device_code = header_text(&headers, "x-device-code")?.map(str::to_owned);
    cmd.request_id = header_text(&headers, "x-request-id")?.map(str::to_owned);
    let r = gw.send(&caller, cmd).await?;
    let replayed = r.replayed;
    let mut resp = success(
        StatusCode::CREATED,
        gw.node_id(),
        SendData {
            id: r.id,
            status: r.status,
            device: r.device_code,
        },
    );
    if replayed {
        // Same answer as the first time; the header tells a curious client it was a replay.
        resp.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// A message's delivery state.
#[utoipa::path(
    get,
    path = "/api/v1/status/{id}",
    tag = "messages",
    params(("id" = String, Path, description = "message id from /send")),
    responses(
        (status = 200, body = inline(super::envelope::Success<StatusData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn status(
    State(gw): State<Gateway>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let (caller, _) = signed(&gw, &method, &uri, &headers, body, MAX_GET_BODY_BYTES).await?;
    let m = gw.message_status(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), StatusData::from(m)))
}

/// The project's messages, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    params(ListParams),
    responses((status = 200, body = inline(super::envelope::Success<MessageList>)), (status = 401, body = ErrorBody))
)]
pub async fn list(
    State(gw): State<Gateway>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
    body: Body,
) -> ApiResult {
    let (caller, _) = signed(&gw, &method, &uri, &headers, body, MAX_GET_BODY_BYTES).await?;
    let page = gw
        .list_messages(
            &caller,
            ListQuery {
                page_size: p.page_size,
                page_token: p.page_token,
                device_code: p.device_code,
                status: p.status,
            },
        )
        .await?;
    let data = MessageList {
        messages: page.messages.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}
