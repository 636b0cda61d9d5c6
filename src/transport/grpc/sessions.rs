//! `wagate.v1.SessionsService` over the service layer.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::principal;
use super::convert::{non_empty, state_to_proto, timestamp};
use super::webhooks::webhook;
use crate::domain::Gateway;
use crate::domain::sessions::SessionView;
use crate::proto::v1::sessions_service_server::SessionsService;
use crate::proto::v1::*;
use crate::sessions::{SessionState as S, Snapshot};

pub struct SessionsApi {
    gw: Gateway,
}

impl SessionsApi {
    pub fn new(gw: Gateway) -> Self {
        SessionsApi { gw }
    }
}

fn to_proto(v: SessionView) -> Session {
    Session {
        session_id: v.session_id.into(),
        device_code: v.device_code,
        name: v.name,
        state: state_to_proto(v.state) as i32,
        reason: v.reason.unwrap_or_default(),
        phone_number: v.phone.unwrap_or_default(),
        push_name: v.push_name.unwrap_or_default(),
        last_connected_at: v.last_connected_at.map(timestamp),
        created_at: Some(timestamp(v.created_at)),
        owner_node: v.owner_node.unwrap_or_default(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchSessionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SessionsService for SessionsApi {
    async fn create_session(
        &self,
        req: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let p = principal(&req)?;
        let m = req.into_inner();
        let hook = m
            .webhook
            .as_ref()
            .map(|w| (w.url.as_str(), w.events.as_slice()));
        let created = self
            .gw
            .create_session(
                p.manager()?,
                non_empty(m.name),
                non_empty(m.device_code),
                hook,
            )
            .await?;
        let (hook, webhook_secret) = match created.webhook {
            Some(h) => (Some(webhook(h.webhook)), h.secret),
            None => (None, String::new()),
        };
        Ok(Response::new(CreateSessionResponse {
            session: Some(to_proto(created.session)),
            api_key: created.api_key,
            webhook: hook,
            webhook_secret,
        }))
    }

    async fn list_sessions(
        &self,
        req: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let p = principal(&req)?;
        let sessions = self
            .gw
            .list_sessions(p.manager()?)
            .await?
            .into_iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(ListSessionsResponse {
            sessions,
            next_page_token: String::new(),
        }))
    }

    async fn get_session(
        &self,
        req: Request<GetSessionRequest>,
    ) -> Result<Response<GetSessionResponse>, Status> {
        let p = principal(&req)?;
        let id = &req.get_ref().session_id;
        let s = self.gw.get_session(p.reader_of(id)?, id).await?;
        Ok(Response::new(GetSessionResponse {
            session: Some(to_proto(s)),
        }))
    }

    async fn get_qr_code(
        &self,
        req: Request<GetQrCodeRequest>,
    ) -> Result<Response<GetQrCodeResponse>, Status> {
        let p = principal(&req)?;
        let m = req.get_ref();
        let q = self
            .gw
            .session_qr(p.reader_of(&m.session_id)?, &m.session_id)
            .await?;
        let image = QrImage::try_from(m.image).unwrap_or_default();
        let (mut png, mut svg) = (Vec::new(), String::new());
        if let Some(code) = &q.code {
            if matches!(image, QrImage::Unspecified | QrImage::Png) {
                png = crate::domain::qr::png(code)?;
            }
            if matches!(image, QrImage::Unspecified | QrImage::Svg) {
                svg = crate::domain::qr::svg(code)?;
            }
        }
        Ok(Response::new(GetQrCodeResponse {
            qr_code: q.code.unwrap_or_default(),
            png,
            svg,
            expires_at: q.expires_at.map(timestamp),
            connected: q.connected,
        }))
    }

    async fn request_pairing_code(
        &self,
        req: Request<RequestPairingCodeRequest>,
    ) -> Result<Response<RequestPairingCodeResponse>, Status> {
        let p = principal(&req)?;
        let m = req.into_inner();
        let pairing = self
            .gw
            .request_pairing_code(p.manager()?, &m.session_id, &m.phone_number)
            .await?;
        Ok(Response::new(RequestPairingCodeResponse {
            code: pairing.code,
            expires_at: Some(timestamp(pairing.expires_at)),
        }))
    }

    async fn logout_session(
        &self,
        req: Request<LogoutSessionRequest>,
    ) -> Result<Response<LogoutSessionResponse>, Status> {
        let p = principal(&req)?;
        let s = self
            .gw
            .logout_session(p.manager()?, &req.get_ref().session_id)
            .await?;
        Ok(Response::new(LogoutSessionResponse {
            session: Some(to_proto(s)),
        }))
    }

    async fn delete_session(
        &self,
        req: Request<DeleteSessionRequest>,
    ) -> Result<Response<DeleteSessionResponse>, Status> {
        let p = principal(&req)?;
        self.gw
            .delete_session(p.manager()?, &req.get_ref().session_id)
            .await?;
        Ok(Response::new(DeleteSessionResponse {}))
    }

    async fn restart_session(
        &self,
        req: Request<RestartSessionRequest>,
    ) -> Result<Response<RestartSessionResponse>, Status> {
        let p = principal(&req)?;
        let s = self
            .gw
            .restart_session(p.manager()?, &req.get_ref().session_id)
            .await?;
        Ok(Response::new(RestartSessionResponse {
            session: Some(to_proto(s)),
        }))
    }

    type WatchSessionStream = WatchStream;

    async fn watch_session(
        &self,
        req: Request<WatchSessionRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let p = principal(&req)?;
        let id = &req.get_ref().session_id;
        let watch = self.gw.watch_session(p.reader_of(id)?, id).await?;
        let (row, rx) = (watch.session, watch.changes);
        let base = SessionView {
            session_id: row.id,
            device_code: row.code,
            name: row.name,
            state: S::Pending,
            reason: None,
            phone: None,
            push_name: None,
            last_connected_at: None,
            created_at: row.created_at,
            owner_node: None,
        };
        // The current state first, then every change, until the client goes away.
        let stream = futures::stream::unfold((rx, true), move |(mut rx, first)| {
            let base = base.clone();
            async move {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let snap: Snapshot = rx.borrow_and_update().clone();
                let view = SessionView {
                    state: snap.state,
                    reason: snap.reason,
                    phone: snap.phone,
                    push_name: snap.push_name,
                    last_connected_at: snap.last_connected_at,
                    owner_node: snap.node,
                    ..base
                };
                let msg = WatchSessionResponse {
                    session: Some(to_proto(view)),
                    qr_code: snap.qr.map(|q| q.0).unwrap_or_default(),
                    time: Some(timestamp(crate::storage::now_ms())),
                };
                Some((Ok(msg), (rx, false)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
