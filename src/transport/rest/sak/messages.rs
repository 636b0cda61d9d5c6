//! SAK messaging (`/api/v1/messages/*`): send text and media through a session, and its
//! history; transcoded onto `wagate.v1.MessagingService`. The acting session comes from the
//! [`Messenger`] extractor (a session key's own, or `x-session-id` / the body's `sessionId`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::Gateway;
use crate::domain::principal::Principal;
use crate::error::Error;
use crate::proto::v1::messaging_service_server::MessagingService;
use crate::proto::v1::{Direction, ListHistoryRequest, Media, MessageType, SendMessageRequest};
use crate::transport::grpc::convert::{non_empty, status_name};
use crate::transport::grpc::messaging::MessagingApi;
use crate::transport::rest::auth::{
    Messenger, MultipartBody, NamesSession, NoBody, header_text, secured,
};
use crate::transport::rest::call;
use crate::transport::rest::envelope::{ApiResult, ErrorBody, Success, success};
use crate::transport::rest::extract::{Json, Query};
use crate::transport::rest::rfc3339_of;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<Messenger<Json<SendText>>, _>(routes!(send_text)))
        .routes(secured::<Messenger<MultipartBody>, _>(routes!(send_image)))
        .routes(secured::<Messenger<MultipartBody>, _>(routes!(
            send_document
        )))
        .routes(secured::<Messenger<MultipartBody>, _>(routes!(send_video)))
        .routes(secured::<Messenger<MultipartBody>, _>(routes!(send_audio)))
        .routes(secured::<Messenger<NoBody>, _>(routes!(history)))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendText {
    /// Phone number (string or number); non-digits are stripped, a 10-digit number gets the
    /// default country code.
    #[schema(value_type = String, example = "919876543210")]
    to: Option<Value>,
    text: Option<String>,
    /// With a user API key, instead of `x-session-id`.
    session_id: Option<String>,
}

impl NamesSession for SendText {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentData {
    /// Use it with `GET /api/v1/status/{id}` or in `message.status` events.
    message_id: String,
    /// `queued`: stored durably, sent when the session is connected.
    status: String,
    session_id: String,
    to: String,
}

fn to_text(v: Option<Value>) -> Result<String, Error> {
    match v {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(Error::InvalidPhoneNumber),
    }
}

/// Sends `msg` as the acting session.
async fn send_as_session(
    gw: &Gateway,
    principal: Principal,
    headers: &HeaderMap,
    msg: SendMessageRequest,
) -> ApiResult {
    let req = call::request_with(
        principal,
        msg,
        &[("x-request-id", header_text(headers, "x-request-id")?)],
    )?;
    let r = call::answer(MessagingApi::new(gw.clone()).send_message(req).await)?;
    let data = SentData {
        to: r.recipient,
        message_id: r.id,
        status: status_name(r.status).unwrap_or_default().to_owned(),
        session_id: r.session_id,
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// Send a text message through the session (durably queued before the answer).
#[utoipa::path(
    post, path = "/api/v1/messages/send", tag = "messages (SAK)",
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/SendMessage"))),
    params(
        ("x-session-id" = Option<String>, Header, description = "with a user API key: the session that sends"),
        ("x-request-id" = Option<String>, Header, description = "idempotency key (24 h)"),
    ),
    request_body = SendText,
    responses(
        (status = 201, body = inline(Success<SentData>)),
        (status = 400, description = "INVALID_PHONE_NUMBER, SESSION_ID_REQUIRED, MESSAGE_REQUIRED, …", body = ErrorBody),
        (status = 401, description = "NO_API_KEY, INVALID_API_KEY", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
pub async fn send_text(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    m: Messenger<Json<SendText>>,
) -> ApiResult {
    let Json(req) = m.body;
    let msg = SendMessageRequest {
        recipient: to_text(req.to)?,
        r#type: MessageType::Text as i32,
        message: req.text.unwrap_or_default(),
        ..Default::default()
    };
    send_as_session(&gw, m.principal, &headers, msg).await
}

/// `send-image`, `send-document`, `send-video`, `send-audio`: multipart with `to`,
/// optional `caption`, and the file in the field named like the type.
async fn send_media(
    gw: Gateway,
    headers: HeaderMap,
    m: Messenger<MultipartBody>,
    kind: &'static str,
    r#type: MessageType,
) -> ApiResult {
    let mut msg = SendMessageRequest {
        r#type: r#type as i32,
        ..Default::default()
    };
    for part in m.body.0 {
        match part.name.as_str() {
            "to" => msg.recipient = part.text()?,
            "caption" => msg.message = part.text()?,
            name if name == kind || name == "file" || name == "media" => {
                msg.media = Some(Media {
                    data: part.data.to_vec(),
                    filename: part.filename.unwrap_or_default(),
                    mime_type: String::new(),
                })
            }
            _ => {}
        }
    }
    send_as_session(&gw, m.principal, &headers, msg).await
}

/// Declares a multipart media endpoint: its form's schema, its OpenAPI operation and its
/// handler.
macro_rules! media_endpoint {
    ($name:ident, $form:ident, $kind:ident, $type:expr, $path:literal, $summary:literal) => {
        #[doc = concat!("The `", stringify!($name), "` form.")]
        #[derive(ToSchema)]
        #[allow(dead_code)] // documents the form; the handler reads its parts one by one
        pub struct $form {
            /// Phone number.
            to: String,
            caption: Option<String>,
            /// The file, ≤ 10 MiB (the fields `file` and `media` are accepted too).
            #[schema(value_type = String, format = Binary)]
            $kind: Vec<u8>,
        }

        #[doc = $summary]
        #[utoipa::path(
            post, path = $path, tag = "messages (SAK)", summary = $summary,
            extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/SendMessage"))),
            params(
                ("x-session-id" = Option<String>, Header, description = "with a user API key: the session that sends"),
                ("x-request-id" = Option<String>, Header, description = "idempotency key (24 h)"),
            ),
            request_body(content = $form, content_type = "multipart/form-data"),
            responses(
                (status = 201, body = inline(Success<SentData>)),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
                (status = 413, description = "MEDIA_TOO_LARGE", body = ErrorBody),
                (status = 415, description = "UNSUPPORTED_MEDIA_TYPE, UNSUPPORTED_CONTENT_TYPE", body = ErrorBody),
                (status = 429, body = ErrorBody),
            )
        )]
        pub async fn $name(
            State(gw): State<Gateway>,
            headers: HeaderMap,
            m: Messenger<MultipartBody>,
        ) -> ApiResult {
            send_media(gw, headers, m, stringify!($kind), $type).await
        }
    };
}

media_endpoint!(
    send_image,
    SendImageForm,
    image,
    MessageType::Image,
    "/api/v1/messages/send-image",
    "Send an image (jpeg, png, webp): multipart `to`, optional `caption`, the file in `image`."
);
media_endpoint!(
    send_document,
    SendDocumentForm,
    document,
    MessageType::Document,
    "/api/v1/messages/send-document",
    "Send a document (pdf, doc, docx): multipart `to`, optional `caption`, the file in `document`."
);
media_endpoint!(
    send_video,
    SendVideoForm,
    video,
    MessageType::Video,
    "/api/v1/messages/send-video",
    "Send a video (mp4): multipart `to`, optional `caption`, the file in `video`."
);
media_endpoint!(
    send_audio,
    SendAudioForm,
    audio,
    MessageType::Audio,
    "/api/v1/messages/send-audio",
    "Send audio (mp3, ogg): multipart `to`, optional `caption`, the file in `audio`."
);

#[derive(Deserialize, IntoParams)]
pub struct HistoryParams {
    /// Default 50.
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItemData {
    id: String,
    /// `inbound` or `outbound`.
    direction: &'static str,
    /// WhatsApp's message id.
    message_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    status: Option<String>,
    push_name: Option<String>,
    /// Unix seconds.
    timestamp: i64,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryData {
    messages: Vec<HistoryItemData>,
    limit: i64,
    offset: i64,
}

/// A REST integer as the proto's: out-of-range values stay out of range.
fn int32(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Messages this session sent and received through the gateway, newest first.
#[utoipa::path(
    get, path = "/api/v1/messages/history", tag = "messages (SAK)",
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/ListHistory"))),
    params(
        HistoryParams,
        ("x-session-id" = Option<String>, Header, description = "with a user API key: the session"),
    ),
    responses(
        (status = 200, body = inline(Success<HistoryData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    )
)]
pub async fn history(
    State(gw): State<Gateway>,
    Query(q): Query<HistoryParams>,
    m: Messenger<NoBody>,
) -> ApiResult {
    let msg = ListHistoryRequest {
        session_id: String::new(),
        limit: q.limit.map(int32),
        offset: q.offset.map(int32),
    };
    let r = call::answer(
        MessagingApi::new(gw.clone())
            .list_history(call::request(Some(m.principal), msg))
            .await,
    )?;
    let messages = r
        .messages
        .into_iter()
        .map(|h| {
            let at = h.time.map(|t| crate::transport::grpc::convert::millis(&t));
            HistoryItemData {
                id: h.id,
                direction: if h.direction == Direction::Inbound as i32 {
                    "inbound"
                } else {
                    "outbound"
                },
                message_id: non_empty(h.wa_message_id),
                from: non_empty(h.from),
                to: non_empty(h.to),
                kind: h.r#type,
                text: non_empty(h.text),
                status: status_name(h.status).map(str::to_owned),
                push_name: non_empty(h.push_name),
                timestamp: at.unwrap_or_default() / 1000,
                created_at: rfc3339_of(h.time),
            }
        })
        .collect();
    let data = HistoryData {
        messages,
        limit: i64::from(r.limit),
        offset: i64::from(r.offset),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}
