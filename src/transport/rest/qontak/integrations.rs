//! `GET /integrations` and `GET /integrations/{id}`: a project's sessions as Qontak WhatsApp
//! channels; a channel's `id` is the session id, which broadcasts take as
//! `channel_integration_id`. Transcoded onto `SessionsService.ListSessions` / `GetSession`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MAX_GET_BYTES, Mekari, Page, Paging, QPath, QQuery, QontakErrorBody, QontakResult};
use super::{ok, page, qontak_time};
use crate::domain::Gateway;
use crate::proto::v1::sessions_service_server::SessionsService;
use crate::proto::v1::{GetSessionRequest, ListSessionsRequest, Session, SessionState};
use crate::transport::grpc::sessions::SessionsApi;
use crate::transport::rest::auth::secured;
use crate::transport::rest::call;

type Signed = Mekari<MAX_GET_BYTES>;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<Signed, _>(routes!(list)))
        .routes(secured::<Signed, _>(routes!(get)))
}

#[derive(Serialize, ToSchema)]
pub struct ChannelSettings {
    /// The linked account's push name, else the session's name.
    account_name: String,
    /// The linked account's number; empty until linked.
    phone_number: String,
    /// The RK device code of the session.
    device_code: String,
    /// The session's state (pending, qr, connecting, connected, …).
    state: String,
}

#[derive(Serialize, ToSchema)]
pub struct Integration {
    /// The session id: the `channel_integration_id` of broadcasts.
    id: String,
    /// Always "wa": a linked WhatsApp account, not the Cloud API.
    #[schema(example = "wa")]
    target_channel: String,
    /// No per-channel webhook here; webhooks are wagate's own.
    webhook: Option<String>,
    settings: ChannelSettings,
    /// The project id.
    organization_id: String,
    created_at: Option<String>,
    /// Linked and connected now.
    is_active: bool,
}

fn state_name(s: i32) -> &'static str {
    match SessionState::try_from(s).unwrap_or(SessionState::Unspecified) {
        SessionState::Unspecified | SessionState::Pending => "pending",
        SessionState::Qr => "qr",
        SessionState::Connecting => "connecting",
        SessionState::Connected => "connected",
        SessionState::Disconnected => "disconnected",
        SessionState::LoggedOut => "logged_out",
        SessionState::Banned => "banned",
        SessionState::Failed => "failed",
    }
}

fn integration(s: Session, project_id: &str) -> Integration {
    let connected = s.state == SessionState::Connected as i32;
    Integration {
        settings: ChannelSettings {
            account_name: if s.push_name.is_empty() {
                s.name.clone()
            } else {
                s.push_name.clone()
            },
            phone_number: s.phone_number.clone(),
            device_code: s.device_code.clone(),
            state: state_name(s.state).into(),
        },
        id: s.session_id,
        target_channel: "wa".into(),
        webhook: None,
        organization_id: project_id.to_owned(),
        created_at: qontak_time(s.created_at),
        is_active: connected,
    }
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Accepted and ignored: every session is a `wa` channel.
    target_channel: Option<String>,
    /// The page, from 1.
    offset: Option<String>,
    /// Page size (default 10, at most 100).
    limit: Option<i64>,
}

/// The project's WhatsApp channels (its sessions).
#[utoipa::path(
    get, path = "/qontak/chat/v1/integrations", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/ListSessions"))),
    params(ListParams),
    responses(
        (status = 200, body = inline(Page<Integration>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
    )
)]
pub async fn list(
    State(gw): State<Gateway>,
    QQuery(q): QQuery<ListParams>,
    signed: Signed,
) -> QontakResult {
    let _ = q.target_channel;
    let paging = Paging::new(q.offset.as_deref(), q.limit)?;
    let project = signed.principal.caller().project.row.id.to_string();
    let api = SessionsApi::new(gw.clone());
    let msg = ListSessionsRequest::default();
    let r = call::answer(
        api.list_sessions(call::request(Some(signed.principal), msg))
            .await,
    )?;
    let total = r.sessions.len() as i64;
    let data = r
        .sessions
        .into_iter()
        .skip(paging.skip() as usize)
        .take(paging.limit as usize)
        .map(|s| integration(s, &project))
        .collect();
    Ok(page(data, paging, total))
}

/// One channel.
#[utoipa::path(
    get, path = "/qontak/chat/v1/integrations/{id}", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.SessionsService/GetSession"))),
    params(("id" = String, Path, description = "channel_integration_id (the session id)")),
    responses(
        (status = 200, body = inline(super::Ok<Integration>)),
        (status = 401, body = QontakErrorBody), (status = 404, description = "SESSION_NOT_FOUND", body = QontakErrorBody),
    )
)]
pub async fn get(
    State(gw): State<Gateway>,
    QPath(id): QPath<String>,
    signed: Signed,
) -> QontakResult {
    let project = signed.principal.caller().project.row.id.to_string();
    let api = SessionsApi::new(gw.clone());
    let msg = GetSessionRequest { session_id: id };
    let r = call::answer(
        api.get_session(call::request(Some(signed.principal), msg))
            .await,
    )?;
    Ok(ok(
        StatusCode::OK,
        integration(r.session.unwrap_or_default(), &project),
    ))
}
