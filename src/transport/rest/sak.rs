//! The SAK self-hosted API (`/api/v1/auth`, `/api/v1/sessions`, `/api/v1/messages/*`),
//! camelCase as its document shows, over the same service layer as RK and gRPC.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::header_str;
use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::{Path, Query, json, optional_json};
use super::webhooks::EventName;
use crate::domain::Gateway;
use crate::domain::accounts::{SakKey, User};
use crate::domain::auth::Caller;
use crate::domain::messaging::{MediaUpload, SendCommand, rfc3339};
use crate::domain::sessions::SessionView;
use crate::error::Error;
use crate::sessions::SessionState;
use crate::transport::limits::read_body;

pub(super) async fn bearer_user(gw: &Gateway, headers: &HeaderMap) -> Result<User, Error> {
    let auth = header_str(headers, header::AUTHORIZATION.as_str()).ok_or(Error::NoToken)?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or(Error::NoToken)?;
    gw.user_from_token(token).await
}

/// Session management accepts a JWT or a user API key; a session key is refused.
pub(super) async fn manager(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, Error> {
    if header_str(headers, header::AUTHORIZATION.as_str()).is_some() {
        let user = bearer_user(gw, headers).await?;
        return gw.caller_for_user(&user).await;
    }
    let key = header_str(headers, "x-api-key").ok_or(Error::NoToken)?;
    gw.sak_key(key).await?.manager()
}

/// Reading one session (its status, its QR): as [`manager`], or that session's own key.
async fn session_reader(gw: &Gateway, headers: &HeaderMap, id: &str) -> Result<Caller, Error> {
    if header_str(headers, header::AUTHORIZATION.as_str()).is_some() {
        let user = bearer_user(gw, headers).await?;
        return gw.caller_for_user(&user).await;
    }
    let key = header_str(headers, "x-api-key").ok_or(Error::NoToken)?;
    gw.sak_key(key).await?.for_session(id)
}

/// Messaging needs `x-api-key`: a session key, or a user key (the session then comes from
/// `x-session-id` or the body). Resolved before the body is read.
pub(super) async fn messaging_key(gw: &Gateway, headers: &HeaderMap) -> Result<SakKey, Error> {
    let key = header_str(headers, "x-api-key")
        .filter(|k| !k.is_empty())
        .ok_or(Error::NoApiKey)?;
    gw.sak_key(key).await
}

/// The session a messaging call acts for; `body_session` is the body's `sessionId`, if any.
pub(super) async fn messenger(
    gw: &Gateway,
    headers: &HeaderMap,
    key: SakKey,
    body_session: Option<&str>,
) -> Result<(Caller, crate::storage::sessions::SessionRow), Error> {
    let session_id = header_str(headers, "x-session-id").or(body_session);
    key.acting_session(gw, session_id).await
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserData {
    id: String,
    email: String,
    name: String,
    project_id: String,
    created_at: String,
}

impl From<&User> for UserData {
    fn from(u: &User) -> Self {
        UserData {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            project_id: u.project_id.clone(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuthData {
    user: UserData,
    /// JWT for `Authorization: Bearer …`.
    token: String,
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
}

impl From<&SessionView> for SessionData {
    fn from(s: &SessionView) -> Self {
        SessionData {
            session_id: s.session_id.clone(),
            device_code: s.device_code.clone(),
            name: s.name.clone(),
            status: s.state.as_str(),
            reason: s.reason.clone(),
            connected: s.state == SessionState::Connected,
            phone_number: s.phone.clone(),
            push_name: s.push_name.clone(),
            last_connected_at: s.last_connected_at.map(rfc3339),
            created_at: rfc3339(s.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(format = "email", max_length = 254)]
    email: String,
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    password: String,
    /// Register only.
    name: Option<String>,
}

/// Create an account (and its project); answers a JWT.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, body = inline(Success<AuthData>)),
        (status = 400, body = ErrorBody), (status = 409, description = "EMAIL_TAKEN", body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
pub async fn register(State(gw): State<Gateway>, body: Body) -> ApiResult {
    let c: Credentials = json(&gw, body).await?;
    let (user, token) = gw
        .register(&c.email, &c.password, c.name.as_deref())
        .await?;
    let data = AuthData {
        user: (&user).into(),
        token,
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// Log in; answers a JWT.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, body = inline(Success<AuthData>)),
        (status = 400, body = ErrorBody), (status = 401, description = "INVALID_CREDENTIALS", body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
pub async fn login(State(gw): State<Gateway>, body: Body) -> ApiResult {
    let c: Credentials = json(&gw, body).await?;
    let (user, token) = gw.login(&c.email, &c.password).await?;
    let data = AuthData {
        user: (&user).into(),
        token,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct NewKey {
    name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyData {
    id: String,
    name: String,
    /// The raw key: shown in this answer only, stored hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    prefix: String,
    created_at: String,
}

/// Create a user API key ("master key"); the raw key is in this answer only.
#[utoipa::path(
    post, path = "/api/v1/auth/api-keys", tag = "auth", security(("bearer" = [])),
    request_body(content = Option<NewKey>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 201, body = inline(Success<ApiKeyData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    )
)]
pub async fn create_api_key(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let req: NewKey = optional_json(&gw, body).await?;
    let (row, raw) = gw.create_user_api_key(&user, req.name.as_deref()).await?;
    let data = ApiKeyData {
        id: row.id,
        name: row.name,
        api_key: Some(raw),
        prefix: row.key_prefix,
        created_at: rfc3339(row.created_at),
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// The user's API keys (prefixes only, never the keys).
#[utoipa::path(
    get, path = "/api/v1/auth/api-keys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = inline(Success<Vec<ApiKeyData>>)), (status = 401, body = ErrorBody))
)]
pub async fn list_api_keys(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let keys: Vec<ApiKeyData> = gw
        .list_user_api_keys(&user)
        .await?
        .into_iter()
        .map(|k| ApiKeyData {
            id: k.id,
            name: k.name,
            api_key: None,
            prefix: k.key_prefix,
            created_at: rfc3339(k.created_at),
        })
        .collect();
    Ok(success(StatusCode::OK, gw.node_id(), keys))
}

/// The project's RK credentials (for `/api/v1/send` and gRPC).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RkCredentials {
    project_id: String,
    /// Reading: the key's prefix (the key itself is stored hashed).
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key_prefix: Option<String>,
    /// Rotation: the new key, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    api_secret: String,
}

/// The user's project credentials for the RK endpoints and gRPC.
#[utoipa::path(
    get, path = "/api/v1/auth/credentials", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = inline(Success<RkCredentials>)), (status = 401, body = ErrorBody))
)]
pub async fn rk_credentials(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let (project_id, prefix, secret) = gw.rk_credentials(&user).await?;
    let data = RkCredentials {
        project_id,
        api_key_prefix: Some(prefix),
        api_key: None,
        api_secret: secret.to_string(),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// New RK API key and secret for the project; the old ones stop working at once.
#[utoipa::path(
    post, path = "/api/v1/auth/credentials/rotate", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = inline(Success<RkCredentials>)), (status = 401, body = ErrorBody))
)]
pub async fn rotate_rk_credentials(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let (key, secret) = gw.rotate_rk_credentials(&user).await?;
    let data = RkCredentials {
        project_id: user.project_id,
        api_key_prefix: None,
        api_key: Some(key),
        api_secret: secret,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
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
    post, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
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
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let req: NewSession = optional_json(&gw, body).await?;
    let webhook = req
        .webhook
        .as_ref()
        .map(|w| (w.url.as_str(), w.events.as_slice()));
    let (s, key, hook) = gw
        .create_session_with_webhook(&caller, req.name, webhook)
        .await?;
    let webhook = hook.map(|(hook, secret)| SessionWebhookData {
        id: hook.id,
        url: hook.url,
        events: hook.events,
        secret,
    });
    let data = SessionCreated {
        session_id: s.session_id,
        api_key: key,
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
    get, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, body = inline(Success<Vec<SessionData>>)), (status = 401, body = ErrorBody))
)]
pub async fn list_sessions(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let list: Vec<SessionData> = gw
        .list_sessions(&caller)
        .await?
        .iter()
        .map(SessionData::from)
        .collect();
    Ok(success(StatusCode::OK, gw.node_id(), list))
}

/// One session's state (connected or not, with the reason).
#[utoipa::path(
    get, path = "/api/v1/sessions/{id}/status", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn session_status(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = session_reader(&gw, &headers, &id).await?;
    let s = gw.get_session(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), SessionData::from(&s)))
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
    get, path = "/api/v1/sessions/{id}/qr", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
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
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<QrParams>,
) -> ApiResult {
    let caller = session_reader(&gw, &headers, &id).await?;
    let qr = gw.session_qr(&caller, &id).await?;
    match (q.format.as_deref(), &qr.code) {
        (Some("png"), Some(code)) => Ok((
            [(header::CONTENT_TYPE, "image/png")],
            crate::domain::qr::png(code)?,
        )
            .into_response()),
        (Some("svg"), Some(code)) => Ok((
            [(header::CONTENT_TYPE, "image/svg+xml")],
            crate::domain::qr::svg(code)?,
        )
            .into_response()),
        (Some(f), _) if f != "png" && f != "svg" && f != "json" => {
            Err(Error::InvalidRequest("format must be png, svg or json".into()).into())
        }
        _ => {
            let message = if qr.connected {
                "Session is connected"
            } else if qr.code.is_some() {
                "Scan this QR code with WhatsApp > Linked devices"
            } else {
                "QR not ready yet, retry shortly"
            };
            let data = QrData {
                qr_code: qr.code,
                connected: qr.connected,
                expires_at: qr.expires_at.map(rfc3339),
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
    delete, path = "/api/v1/sessions/{id}", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionDeleted>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn delete_session(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    gw.delete_session(&caller, &id).await?;
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
    post, path = "/api/v1/sessions/{id}/pairing-code", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
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
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let req: PairingRequest = json(&gw, body).await?;
    let (code, expires) = gw
        .request_pairing_code(&caller, &id, &req.phone_number)
        .await?;
    let data = PairingCode {
        code,
        expires_at: rfc3339(expires),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// Log the linked device out at WhatsApp (the session stays, to be linked again).
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/logout", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn logout_session(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let s = gw.logout_session(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), SessionData::from(&s)))
}

/// Restart the session's connection (e.g. after `banned` or `failed`).
#[utoipa::path(
    post, path = "/api/v1/sessions/{id}/restart", tag = "sessions", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = inline(Success<SessionData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn restart_session(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let s = gw.restart_session(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), SessionData::from(&s)))
}

#[derive(Deserialize, ToSchema)]
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

async fn send_as_session(
    gw: &Gateway,
    caller: &Caller,
    session: &crate::storage::sessions::SessionRow,
    headers: &HeaderMap,
    cmd: SendCommand,
) -> ApiResult {
    let recipient = crate::domain::messaging::normalize_phone(
        &cmd.recipient,
        &gw.settings().default_country_code,
    )?;
    let cmd = SendCommand {
        recipient: recipient.clone(),
        device_code: Some(session.code.clone()),
        request_id: header_str(headers, "x-request-id").map(str::to_owned),
        ..cmd
    };
    let r = gw.send(caller, cmd).await?;
    // A replay of the same request id carries the same recipient (else it is a conflict),
    // so the normalized number is the stored one: no read back.
    let data = SentData {
        to: recipient,
        message_id: r.id,
        status: r.status,
        session_id: session.id.clone(),
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// Send a text message through the session (durably queued before the answer).
#[utoipa::path(
    post, path = "/api/v1/messages/send", tag = "messages (SAK)",
    security(("apiKey" = [])),
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
pub async fn send_text(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> ApiResult {
    let key = messaging_key(&gw, &headers).await?;
    let req: Result<SendText, Error> = json(&gw, body).await;
    let session_hint = req.as_ref().ok().and_then(|r| r.session_id.clone());
    let (caller, session) = messenger(&gw, &headers, key, session_hint.as_deref()).await?;
    let req = req?;
    let cmd = SendCommand {
        recipient: to_text(req.to)?,
        kind: Some("text".into()),
        text: req.text,
        ..Default::default()
    };
    send_as_session(&gw, &caller, &session, &headers, cmd).await
}

/// `send-image`, `send-document`, `send-video`, `send-audio`: multipart with `to`,
/// optional `caption`, and the file in the field named like the type.
async fn send_media(gw: Gateway, headers: HeaderMap, body: Body, kind: &'static str) -> ApiResult {
    let key = messaging_key(&gw, &headers).await?;
    let (caller, session) = messenger(&gw, &headers, key, None).await?;
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(Error::UnsupportedContentType.into());
    }
    let body = read_body(&gw, body, super::MAX_BODY_BYTES).await?;
    let mut cmd = SendCommand {
        kind: Some(kind.into()),
        ..Default::default()
    };
    for part in super::form::parse(content_type, body).await? {
        match part.name.as_str() {
            "to" => cmd.recipient = part.text()?,
            "caption" => cmd.text = Some(part.text()?),
            name if name == kind || name == "file" || name == "media" => {
                cmd.media = Some(MediaUpload {
                    data: part.data.to_vec(),
                    filename: part.filename,
                })
            }
            _ => {}
        }
    }
    send_as_session(&gw, &caller, &session, &headers, cmd).await
}

/// Declares a multipart media endpoint: its form's schema, its OpenAPI operation and its
/// handler.
macro_rules! media_endpoint {
    ($name:ident, $form:ident, $kind:ident, $path:literal, $summary:literal) => {
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
            security(("apiKey" = [])),
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
            body: Body,
        ) -> ApiResult {
            send_media(gw, headers, body, stringify!($kind)).await
        }
    };
}

media_endpoint!(
    send_image,
    SendImageForm,
    image,
    "/api/v1/messages/send-image",
    "Send an image (jpeg, png, webp): multipart `to`, optional `caption`, the file in `image`."
);
media_endpoint!(
    send_document,
    SendDocumentForm,
    document,
    "/api/v1/messages/send-document",
    "Send a document (pdf, doc, docx): multipart `to`, optional `caption`, the file in `document`."
);
media_endpoint!(
    send_video,
    SendVideoForm,
    video,
    "/api/v1/messages/send-video",
    "Send a video (mp4): multipart `to`, optional `caption`, the file in `video`."
);
media_endpoint!(
    send_audio,
    SendAudioForm,
    audio,
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

/// Messages this session sent and received through the gateway, newest first.
#[utoipa::path(
    get, path = "/api/v1/messages/history", tag = "messages (SAK)",
    security(("apiKey" = [])),
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
    headers: HeaderMap,
    Query(p): Query<HistoryParams>,
) -> ApiResult {
    let key = messaging_key(&gw, &headers).await?;
    let (caller, session) = messenger(&gw, &headers, key, None).await?;
    let (limit, offset) = (p.limit.unwrap_or(50), p.offset.unwrap_or(0));
    let items = gw
        .session_history(&caller, &session.id, limit, offset)
        .await?;
    let messages = items
        .into_iter()
        .map(|h| HistoryItemData {
            id: h.id,
            direction: h.direction,
            message_id: h.wa_message_id,
            from: h.from,
            to: h.to,
            kind: h.kind,
            text: h.text,
            status: h.status,
            push_name: h.push_name,
            timestamp: h.at / 1000,
            created_at: rfc3339(h.at),
        })
        .collect();
    let data = HistoryData {
        messages,
        limit,
        offset,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}
