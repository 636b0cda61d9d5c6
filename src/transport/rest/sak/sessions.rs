//! SAK sessions (`/api/v1/sessions/*`): create (optionally with a webhook), list, status, QR,
//! pairing code, logout, restart, delete; transcoded onto `wagate.v1.SessionsService`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::webhooks::EventName;
use crate::domain::Gateway;
use crate::error::Error;
use crate::proto::v1::sessions_service_server::SessionsService;
use crate::proto::v1::{
    CreateSessionRequest, DeleteSessionRequest, GetQrCodeRequest, GetSessionRequest,
    ListSessionsRequest, LogoutSessionRequest, QrImage, RequestPairingCodeRequest,
    RestartSessionRequest, Session, SessionWebhook as SessionWebhookRequest,
};
use crate::sessions::SessionState;
use crate::transport::grpc::convert::{non_empty, state_from_proto};
use crate::transport::grpc::sessions::SessionsApi;
use crate::transport::rest::auth::{SakManager, SakReader, secured};
use crate::transport::rest::call;
use crate::transport::rest::envelope::{ApiResult, ErrorBody, Success, success};
use crate::transport::rest::extract::{Json, OptionalJson, Path, Query};
use crate::transport::rest::{rfc3339_of, rfc3339_opt};

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SakManager, _>(routes!(
            create_session,
            list_sessions
        )))
        .routes(secured::<SakManager, _>(routes!(delete_session)))
        .routes(secured::<SakReader, _>(routes!(session_status)))
        .routes(secured::<SakReader, _>(routes!(session_qr)))
        .routes(secured::<SakManager, _>(routes!(pairing_code)))
        .routes(secured::<SakManager, _>(routes!(logout_session)))
        .routes(secured::<SakManager, _>(routes!(restart_session)))
}

/// A session as the SAK status endpoint shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionData {
    session_id: String,
    /// The RK device code (`X-DEVICE-CODE`) of the same session.
    device_code: String,
    name: String,
    /// pending, qr, connecting, connected, disconnected, logged_out, banned, failed
    status: &'static str,
    reason: Option<String>,
    connected: bool,
    phone_number: Option<String>,
    push_name: Option<String>,
    last_connected_at: Option<String>,
    created_at: String,
    /// The node of the cluster that runs the session now.
    owner_node: Option<String>,
}

impl From<Session> for SessionData {
    fn from(s: Session) -> Self {
        SessionData {
            status: state_from_proto(s.state).as_str(),
            connected: state_from_proto(s.state) == SessionState::Connected,
            session_id: s.session_id,
            device_code: s.device_code,
            name: s.name,
            reason: non_empty(s.reason),
            phone_number: non_empty(s.phone_number),
            push_name: non_empty(s.push_name),
            last_connected_at: rfc3339_opt(s.last_connected_at),
            created_at: rfc3339_of(s.created_at),
            owner_node: non_empty(s.owner_node),
        }
    }
}

fn session_data(s: Option<Session>) -> SessionData {
    s.unwrap_or_default().into()
}

#[derive(Deserialize, Default, ToSchema)]
pub struct NewSession {
    name: Option<String>,
    /// Registers a webhook for this session in the same call.
    webhook: Option<SessionWebhook>,
}

#[derive(Deserialize, ToSchema)]
pub struct SessionWebhook {
    /// An absolute http(s) URL of a public host.
    #[schema(format = "uri")]
    url: String,
    /// Event names or `*`; empty means every event.
    #[serde(default)]
    #[schema(value_type = Vec<EventName>)]
    events: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    session_id: String,
    /// The session API key, shown once.
    api_key: String,
    device_code: String,
    name: String,
    status: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<SessionWebhookData>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionWebhookData {
    id: String,
    url: String,
    events: Vec<String>,
    /// Signing secret, shown once.
    secret: String,
}

/// Create a session (a WhatsApp connection); then fetch its QR.
#[utoipa::path(
    post, path = "/api/v1/sessions", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/CreateSession"))),
    request_body(content = Option<NewSession>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 201, body = inline(Success<SessionCreated>)),
        (status = 400, description = "INVALID_JSON, INVALID_WEBHOOK_URL", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "SESSION_LIMIT_REACHED", body = ErrorBody),
    )
)]
pub async fn create_session(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    OptionalJson(req): OptionalJson<NewSession>,
) -> ApiResult {
    let msg = CreateSessionRequest {
        name: req.name.unwrap_or_default(),
        device_code: String::new(),
        webhook: req.webhook.map(|w| SessionWebhookRequest {
            url: w.url,
            events: w.events,
        }),
    };
    let r = call::answer(
        SessionsApi::new(gw.clone())
            .create_session(call::request(Some(p), msg))
            .await,
    )?;
    let s = r.session.unwrap_or_default();
    let webhook = r.webhook.map(|hook| SessionWebhookData {
        id: hook.webhook_id,
        url: hook.url,
        events: hook.events,
        secret: r.webhook_secret,
    });
    let data = SessionCreated {
        session_id: s.session_id,
        api_key: r.api_key,
        device_code: s.device_code,
        name: s.name,
        status: "pending",
        message: "Scan QR code to connect",
        webhook,
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// The project's sessions.
#[utoipa::path(
    get, path = "/api/v1/sessions", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/ListSessions"))),
    responses((status = 200, body = inline(Success<Vec<SessionData>>)), (status = 401, body = ErrorBody))
)]
pub async fn list_sessions(State(gw): State<Gateway>, SakManager(p): SakManager) -> ApiResult {
    let msg = ListSessionsRequest::default();
    let r = call::answer(
        SessionsApi::new(gw.clone())
            .list_sessions(call::request(Some(p), msg))
            .await,
    )?;
    let list: Vec<SessionData> = r.sessions.into_iter().map(SessionData::from).collect();
    Ok(success(StatusCode::OK, gw.node_id(), list))
}

/// One session's state (connected or not, with the reason).
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/status", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/GetSession"))),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn session_status(
    State(gw): State<Gateway>,
    SakReader(p): SakReader,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = GetSessionRequest { session_id: id };
    let r = call::answer(
        SessionsApi::new(gw.clone())
            .get_session(call::request(Some(p), msg))
            .await,
    )?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        session_data(r.session),
    ))
}

#[derive(Deserialize, IntoParams)]
pub struct QrParams {
    /// `json` (default), `png` or `svg`.
    format: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrData {
    /// The QR string; null until the session shows one, and once connected.
    qr_code: Option<String>,
    connected: bool,
    expires_at: Option<String>,
    message: &'static str,
}

/// The session's current QR code (poll it; it rotates), as JSON, PNG or SVG.
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/qr", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/GetQrCode"))),
    params(("id" = String, Path, description = "session id"), QrParams),
    responses(
        (status = 200, content(
            (inline(Success<QrData>) = "application/json"),
            (Vec<u8> = "image/png"),
            (String = "image/svg+xml"),
        )),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn session_qr(
    State(gw): State<Gateway>,
    SakReader(p): SakReader,
    Path(id): Path<String>,
    Query(q): Query<QrParams>,
) -> ApiResult {
    let image = match q.format.as_deref() {
        Some("png") => QrImage::Png,
        Some("svg") => QrImage::Svg,
        _ => QrImage::None,
    };
    let msg = GetQrCodeRequest {
        session_id: id,
        image: image as i32,
    };
    let qr = call::answer(
        SessionsApi::new(gw.clone())
            .get_qr_code(call::request(Some(p), msg))
            .await,
    )?;
    let has_code = !qr.qr_code.is_empty();
    match (q.format.as_deref(), has_code) {
        (Some("png"), true) => Ok(([(header::CONTENT_TYPE, "image/png")], qr.png).into_response()),
        (Some("svg"), true) => {
            Ok(([(header::CONTENT_TYPE, "image/svg+xml")], qr.svg).into_response())
        }
        (Some(f), _) if f != "png" && f != "svg" && f != "json" => {
            Err(Error::InvalidRequest("format must be png, svg or json".into()).into())
        }
        _ => {
            let message = if qr.connected {
                "Session is connected"
            } else if has_code {
                "Scan this QR code with WhatsApp > Linked devices"
            } else {
                "QR not ready yet, retry shortly"
            };
            let data = QrData {
                qr_code: non_empty(qr.qr_code),
                connected: qr.connected,
                expires_at: rfc3339_opt(qr.expires_at),
                message,
            };
            Ok(success(StatusCode::OK, gw.node_id(), data))
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDeleted {
    session_id: String,
    deleted: bool,
}

/// Log the session out at WhatsApp, wipe its keys and delete it.
#[utoipa::path(
    delete, path = "/api/v1/sessions/{id}", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/DeleteSession"))),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionDeleted>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn delete_session(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = DeleteSessionRequest {
        session_id: id.clone(),
    };
    call::answer(
        SessionsApi::new(gw.clone())
            .delete_session(call::request(Some(p), msg))
            .await,
    )?;
    let data = SessionDeleted {
        session_id: id,
        deleted: true,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    /// The account's phone number, digits with country code (8–15 digits).
    #[schema(min_length = 8, example = "919876543210")]
    phone_number: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingCode {
    /// Type it in WhatsApp → Linked devices → Link with phone number.
    code: String,
    expires_at: String,
}

/// Link by pairing code instead of a QR.
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/pairing-code", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/RequestPairingCode"))),
    params(("id" = String, Path, description = "session id")),
    request_body = PairingRequest,
    responses(
        (status = 200, body = inline(Success<PairingCode>)),
        (status = 400, description = "INVALID_PHONE_NUMBER", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, description = "WHATSAPP_UNAVAILABLE: WhatsApp did not answer; retry", body = ErrorBody),
    )
)]
pub async fn pairing_code(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    Json(req): Json<PairingRequest>,
) -> ApiResult {
    let msg = RequestPairingCodeRequest {
        session_id: id,
        phone_number: req.phone_number,
    };
    let r = call::answer(
        SessionsApi::new(gw.clone())
            .request_pairing_code(call::request(Some(p), msg))
            .await,
    )?;
    let data = PairingCode {
        code: r.code,
        expires_at: rfc3339_of(r.expires_at),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// Log the linked device out at WhatsApp (the session stays, to be linked again).
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/logout", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/LogoutSession"))),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn logout_session(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = LogoutSessionRequest { session_id: id };
    let r = call::answer(
        SessionsApi::new(gw.clone())
            .logout_session(call::request(Some(p), msg))
            .await,
    )?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        session_data(r.session),
    ))
}

/// Restart the session's connection (e.g. after `banned` or `failed`).
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/restart", tag = "sessions",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/RestartSession"))),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn restart_session(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = RestartSessionRequest { session_id: id };
    let r = call::answer(
        SessionsApi::new(gw.clone())
            .restart_session(call::request(Some(p), msg))
            .await,
    )?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        session_data(r.session),
    ))
}
