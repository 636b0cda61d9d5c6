//! The RK Connect surface: `POST /api/v1/send`, `GET /api/v1/status/{id}`,
//! `GET /api/v1/messages`, every request signed ([`Signed`]), transcoded onto
//! `wagate.v1.MessagingService`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Signed, header_str, header_text, secured};
use super::call;
use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::{Path, Query};
use super::{rfc3339_of, rfc3339_opt};
use crate::domain::Gateway;
use crate::domain::messaging::MAX_PAYLOAD_BYTES;
use crate::error::Error;
use crate::proto::v1::messaging_service_server::MessagingService;
use crate::proto::v1::{
    GetMessageStatusRequest, ListMessagesRequest, Media, Message, SendMessageRequest,
};
use crate::transport::error::Refusal;
use crate::transport::grpc::convert::{
    json_to_struct, kind_from_name, kind_name, non_empty, status_from_name, status_name,
    struct_to_json,
};
use crate::transport::grpc::messaging::MessagingApi;

/// A GET is signed over its (normally empty) body; it has no use for a large one.
const MAX_GET_BODY_BYTES: usize = 64 * 1024;

type SignedSend = Signed<{ super::MAX_BODY_BYTES }>;
type SignedGet = Signed<MAX_GET_BODY_BYTES>;

/// The RK Connect routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SignedSend, _>(routes!(send)))
        .routes(secured::<SignedGet, _>(routes!(status)))
        .routes(secured::<SignedGet, _>(routes!(list)))
}

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
#[allow(dead_code)] // documents the form; the handler reads its parts one by one
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

impl From<Message> for StatusData {
    fn from(m: Message) -> Self {
        StatusData {
            id: m.id,
            status: status_name(m.status).unwrap_or_default().to_owned(),
            recipient: m.recipient,
            device_code: m.device_code,
            kind: kind_name(m.r#type).to_owned(),
            created_at: rfc3339_of(m.created_at),
            sent_at: rfc3339_opt(m.sent_at),
            delivered_at: rfc3339_opt(m.delivered_at),
            read_at: rfc3339_opt(m.read_at),
            failed_at: rfc3339_opt(m.failed_at),
            error_code: non_empty(m.error_code),
            error_message: non_empty(m.error_message),
            payload: m.payload.map(struct_to_json),
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

fn recipient_text(v: Option<Value>) -> Result<String, Error> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(Error::InvalidRecipient),
    }
}

/// Your metadata as the proto `Struct` it travels in: an object, or nothing.
fn payload_struct(v: Option<Value>) -> Result<Option<prost_types::Struct>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(json_to_struct(m))),
        Some(_) => Err(Error::InvalidPayload(MAX_PAYLOAD_BYTES)),
    }
}

async fn decode_send(
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Result<SendMessageRequest, super::envelope::ApiError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        let j: SendJson = super::extract::json_object(&body)?;
        return Ok(SendMessageRequest {
            recipient: recipient_text(j.recipient)?,
            r#type: kind_from_name(j.kind.as_deref()),
            message: j.message.unwrap_or_default(),
            payload: payload_struct(j.payload)?,
            ..Default::default()
        });
    }
    if mime == "multipart/form-data" {
        return decode_multipart(content_type, body).await;
    }
    Err(Refusal::UnsupportedContentType.into())
}

async fn decode_multipart(
    content_type: &str,
    body: axum::body::Bytes,
) -> Result<SendMessageRequest, super::envelope::ApiError> {
    let mut m = SendMessageRequest::default();
    for part in super::form::parse(content_type, body).await? {
        match part.name.as_str() {
            "media" => {
                m.media = Some(Media {
                    data: part.data.to_vec(),
                    filename: part.filename.unwrap_or_default(),
                    mime_type: String::new(),
                })
            }
            "recipient" => m.recipient = part.text()?,
            "type" => m.r#type = kind_from_name(Some(&part.text()?)),
            "message" => m.message = part.text()?,
            "payload" => {
                let text = part.text()?;
                if !text.trim().is_empty() {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|_| Error::InvalidPayload(MAX_PAYLOAD_BYTES))?;
                    m.payload = payload_struct(Some(v))?;
                }
            }
            _ => {} // unknown fields are ignored, as JSON's are
        }
    }
    Ok(m)
}

/// Send a message. It is durably queued before the 201 is answered.
#[utoipa::path(
    post,
    path = "/api/v1/send",
    tag = "messages",
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/SendMessage"))),
    request_body(content(
        (SendJson = "application/json"),
        (SendForm = "multipart/form-data"),
    )),
    params(
        ("X-DEVICE-CODE" = String, Header, description = "device that sends, e.g. RK-XXXX"),
        ("X-REQUEST-ID" = Option<String>, Header, description = "idempotency key (24 h)"),
    ),
    responses(
        (status = 201, description = "queued", body = inline(Success<SendData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn send(State(gw): State<Gateway>, headers: HeaderMap, signed: SignedSend) -> ApiResult {
    let mut msg = decode_send(&headers, signed.body).await?;
    msg.device_code = header_text(&headers, "x-device-code")?
        .unwrap_or_default()
        .to_owned();
    let req = call::request_with(
        signed.principal,
        msg,
        &[("x-request-id", header_text(&headers, "x-request-id")?)],
    )?;
    let r = call::answer(MessagingApi::new(gw.clone()).send_message(req).await)?;
    let mut resp = success(
        StatusCode::CREATED,
        gw.node_id(),
        SendData {
            id: r.id,
            status: status_name(r.status).unwrap_or_default().to_owned(),
            device: r.device,
        },
    );
    if r.replayed {
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
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/GetMessageStatus"))),
    params(("id" = String, Path, description = "message id from /send")),
    responses(
        (status = 200, body = inline(Success<StatusData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn status(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    signed: SignedGet,
) -> ApiResult {
    let req = call::request(Some(signed.principal), GetMessageStatusRequest { id });
    let r = call::answer(MessagingApi::new(gw.clone()).get_message_status(req).await)?;
    let m = r.message.unwrap_or_default();
    Ok(success(StatusCode::OK, gw.node_id(), StatusData::from(m)))
}

/// The project's messages, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/ListMessages"))),
    params(ListParams),
    responses((status = 200, body = inline(Success<MessageList>)), (status = 401, body = ErrorBody))
)]
pub async fn list(
    State(gw): State<Gateway>,
    Query(p): Query<ListParams>,
    signed: SignedGet,
) -> ApiResult {
    let msg = ListMessagesRequest {
        page_size: p.page_size.map(|n| n.clamp(-1, i64::from(i32::MAX)) as i32),
        page_token: p.page_token.unwrap_or_default(),
        device_code: p.device_code.unwrap_or_default(),
        status: status_from_name(p.status.as_deref()),
    };
    let req = call::request(Some(signed.principal), msg);
    let page = call::answer(MessagingApi::new(gw.clone()).list_messages(req).await)?;
    let data = MessageList {
        messages: page.messages.into_iter().map(Into::into).collect(),
        next_page_token: non_empty(page.next_page_token),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}
