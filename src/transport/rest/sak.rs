//! The SAK self-hosted API (`/api/v1/auth`, `/api/v1/sessions`, `/api/v1/messages/*`),
//! camelCase as its document shows, over the same service layer as RK and gRPC.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::header_str;
use super::envelope::{ApiResult, success};
use super::messaging::body_error;
use crate::domain::Gateway;
use crate::domain::accounts::{SakCaller, User};
use crate::domain::auth::Caller;
use crate::domain::messaging::{MediaUpload, SendCommand, rfc3339};
use crate::domain::sessions::SessionView;
use crate::error::Error;
use crate::sessions::SessionState;

fn json_body<T: serde::de::DeserializeOwned>(
    body: &Result<Bytes, BytesRejection>,
) -> Result<T, Error> {
    match body {
        Ok(b) => serde_json::from_slice(b).map_err(|e| Error::InvalidJson(e.to_string())),
        Err(_) => Err(Error::PayloadTooLarge),
    }
}

async fn bearer_user(gw: &Gateway, headers: &HeaderMap) -> Result<User, Error> {
    let auth = header_str(headers, header::AUTHORIZATION.as_str()).ok_or(Error::NoToken)?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or(Error::NoToken)?;
    gw.user_from_token(token).await
}

/// Session management accepts a JWT or a user API key.
async fn manager(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, Error> {
    if header_str(headers, header::AUTHORIZATION.as_str()).is_some() {
        let user = bearer_user(gw, headers).await?;
        return gw.caller_for_user(&user).await;
    }
    let key = header_str(headers, "x-api-key").ok_or(Error::NoToken)?;
    Ok(gw.sak_api_key(key, None).await?.caller)
}

/// Messaging needs `x-api-key`: a session key, or a user key plus `x-session-id`.
async fn messenger(
    gw: &Gateway,
    headers: &HeaderMap,
    body_session: Option<&str>,
) -> Result<(Caller, crate::storage::sessions::SessionRow), Error> {
    let key = header_str(headers, "x-api-key")
        .filter(|k| !k.is_empty())
        .ok_or(Error::NoApiKey)?;
    let session_id = header_str(headers, "x-session-id").or(body_session);
    let SakCaller { caller, session } = gw.sak_api_key(key, session_id).await?;
    let session = session.ok_or(Error::SessionIdRequired)?;
    Ok((caller, session))
}

fn user_json(u: &User) -> Value {
    json!({"id": u.id, "email": u.email, "name": u.name, "projectId": u.project_id, "createdAt": rfc3339(u.created_at)})
}

fn session_json(s: &SessionView) -> Value {
    json!({
        "sessionId": s.session_id,
        "deviceCode": s.device_code,
        "name": s.name,
        "status": s.state.as_str(),
        "reason": s.reason,
        "connected": s.state == SessionState::Connected,
        "phoneNumber": s.phone,
        "pushName": s.push_name,
        "lastConnectedAt": s.last_connected_at.map(rfc3339),
        "createdAt": rfc3339(s.created_at),
    })
}

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: String,
    name: Option<String>,
}

pub async fn register(State(gw): State<Gateway>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let c: Credentials = json_body(&body)?;
    let (user, token) = gw
        .register(&c.email, &c.password, c.name.as_deref())
        .await?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        json!({"user": user_json(&user), "token": token}),
    ))
}

pub async fn login(State(gw): State<Gateway>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let c: Credentials = json_body(&body)?;
    let (user, token) = gw.login(&c.email, &c.password).await?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        json!({"user": user_json(&user), "token": token}),
    ))
}

#[derive(Deserialize, Default)]
pub struct NewKey {
    name: Option<String>,
}

pub async fn create_api_key(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let req: NewKey = match &body {
        Ok(b) if b.is_empty() => NewKey::default(),
        _ => json_body(&body)?,
    };
    let (row, raw) = gw.create_user_api_key(&user, req.name.as_deref()).await?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        json!({"id": row.id, "name": row.name, "apiKey": raw, "prefix": row.key_prefix, "createdAt": rfc3339(row.created_at)}),
    ))
}

pub async fn list_api_keys(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let keys: Vec<Value> = gw
        .list_user_api_keys(&user)
        .await?
        .into_iter()
        .map(|k| json!({"id": k.id, "name": k.name, "prefix": k.key_prefix, "createdAt": rfc3339(k.created_at)}))
        .collect();
    Ok(success(StatusCode::OK, gw.node_id(), keys))
}

/// The user's project credentials for the RK endpoints and gRPC.
pub async fn rk_credentials(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let (project_id, prefix, secret) = gw.rk_credentials(&user).await?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        json!({"projectId": project_id, "apiKeyPrefix": prefix, "apiSecret": &*secret}),
    ))
}

pub async fn rotate_rk_credentials(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let user = bearer_user(&gw, &headers).await?;
    let (key, secret) = gw.rotate_rk_credentials(&user).await?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        json!({"projectId": user.project_id, "apiKey": key, "apiSecret": secret}),
    ))
}

#[derive(Deserialize, Default)]
pub struct NewSession {
    name: Option<String>,
}

pub async fn create_session(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let req: NewSession = match &body {
        Ok(b) if b.is_empty() => NewSession::default(),
        _ => json_body(&body)?,
    };
    let (s, key) = gw.create_session_with_key(&caller, req.name).await?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        json!({
            "sessionId": s.session_id,
            "apiKey": key,
            "deviceCode": s.device_code,
            "name": s.name,
            "status": "pending",
            "message": "Scan QR code to connect",
        }),
    ))
}

pub async fn list_sessions(State(gw): State<Gateway>, headers: HeaderMap) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let list: Vec<Value> = gw
        .list_sessions(&caller)
        .await?
        .iter()
        .map(session_json)
        .collect();
    Ok(success(StatusCode::OK, gw.node_id(), list))
}

pub async fn session_status(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let s = gw.get_session(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), session_json(&s)))
}

#[derive(Deserialize)]
pub struct QrParams {
    format: Option<String>,
}

pub async fn session_qr(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<QrParams>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
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
            Ok(success(
                StatusCode::OK,
                gw.node_id(),
                json!({"qrCode": qr.code, "connected": qr.connected, "expiresAt": qr.expires_at.map(rfc3339), "message": message}),
            ))
        }
    }
}

pub async fn delete_session(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    gw.delete_session(&caller, &id).await?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        json!({"sessionId": id, "deleted": true}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    phone_number: String,
}

pub async fn pairing_code(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let req: PairingRequest = json_body(&body)?;
    let (code, expires) = gw
        .request_pairing_code(&caller, &id, &req.phone_number)
        .await?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        json!({"code": code, "expiresAt": rfc3339(expires)}),
    ))
}

pub async fn logout_session(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let s = gw.logout_session(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), session_json(&s)))
}

pub async fn restart_session(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let s = gw.restart_session(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), session_json(&s)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendText {
    to: Option<Value>,
    text: Option<String>,
    session_id: Option<String>,
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
        recipient,
        device_code: Some(session.code.clone()),
        request_id: header_str(headers, "x-request-id").map(str::to_owned),
        ..cmd
    };
    let r = gw.send(caller, cmd).await?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        json!({"messageId": r.id, "status": r.status, "sessionId": session.id, "to": gw.message_status(caller, &r.id).await?.recipient}),
    ))
}

pub async fn send_text(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req: Result<SendText, Error> = json_body(&body);
    let session_hint = req.as_ref().ok().and_then(|r| r.session_id.clone());
    let (caller, session) = messenger(&gw, &headers, session_hint.as_deref()).await?;
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
async fn send_media(
    gw: Gateway,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: &'static str,
) -> ApiResult {
    let body = body.map_err(body_error)?;
    let session_hint = header_str(&headers, "x-session-id").map(str::to_owned);
    let (caller, session) = messenger(&gw, &headers, session_hint.as_deref()).await?;
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(Error::UnsupportedContentType.into());
    }
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

pub async fn send_image(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    send_media(gw, headers, body, "image").await
}

pub async fn send_document(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    send_media(gw, headers, body, "document").await
}

pub async fn send_video(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    send_media(gw, headers, body, "video").await
}

pub async fn send_audio(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    send_media(gw, headers, body, "audio").await
}

#[derive(Deserialize)]
pub struct HistoryParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Messages this session sent and received through the gateway, newest first.
pub async fn history(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(p): Query<HistoryParams>,
) -> ApiResult {
    let (caller, session) = messenger(&gw, &headers, None).await?;
    let (limit, offset) = (p.limit.unwrap_or(50), p.offset.unwrap_or(0));
    let items = gw
        .session_history(&caller, &session.id, limit, offset)
        .await?;
    let messages: Vec<Value> = items
        .into_iter()
        .map(|h| {
            json!({
                "id": h.id,
                "direction": h.direction,
                "messageId": h.wa_message_id,
                "from": h.from,
                "to": h.to,
                "type": h.kind,
                "text": h.text,
                "status": h.status,
                "pushName": h.push_name,
                "timestamp": h.at / 1000,
                "createdAt": rfc3339(h.at),
            })
        })
        .collect();
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        json!({"messages": messages, "limit": limit, "offset": offset}),
    ))
}
