//! `wagate.internal.v1.NodeService`: what other nodes of the cluster forward to this one
//! about the sessions it runs. Callers are authenticated by the gRPC middleware
//! (`auth::authenticate`, a node token bound to the method); a session this node does not
//! run answers `SESSION_MOVED`, so the caller looks its owner up again.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::cluster::Membership;
use crate::cluster::peers::to_proto;
use crate::error::Error;
use crate::proto::internal::node_service_server::NodeService;
use crate::proto::internal::*;

pub struct NodeApi {
    member: Arc<Membership>,
}

impl NodeApi {
    pub fn new(member: Arc<Membership>) -> Self {
        NodeApi { member }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<WatchSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn get_snapshot(
        &self,
        req: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let s = self.member.local().snapshot(&req.get_ref().session_id);
        Ok(Response::new(GetSnapshotResponse {
            running: s.is_some(),
            snapshot: s.as_ref().map(to_proto),
        }))
    }

    type WatchSnapshotStream = SnapshotStream;

    async fn watch_snapshot(
        &self,
        req: Request<WatchSnapshotRequest>,
    ) -> Result<Response<Self::WatchSnapshotStream>, Status> {
        let mut rx = self
            .member
            .local()
            .watch(&req.get_ref().session_id)
            .ok_or(Error::SessionMoved)?;
        // The current state, then every change, until the session stops running here.
        let stream = async_stream(move |tx| async move {
            loop {
                let s = to_proto(&rx.borrow_and_update());
                if tx
                    .send(Ok(WatchSnapshotResponse { snapshot: Some(s) }))
                    .await
                    .is_err()
                    || rx.changed().await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn request_pairing_code(
        &self,
        req: Request<RequestPairingCodeRequest>,
    ) -> Result<Response<RequestPairingCodeResponse>, Status> {
        let m = req.into_inner();
        let code = self
            .member
            .local()
            .pairing_code(&m.session_id, &m.phone)
            .await?;
        Ok(Response::new(RequestPairingCodeResponse { code }))
    }

    async fn restart_session(
        &self,
        req: Request<RestartSessionRequest>,
    ) -> Result<Response<RestartSessionResponse>, Status> {
        if !self
            .member
            .local()
            .restart(&req.get_ref().session_id)
            .await?
        {
            return Err(Error::SessionMoved.into());
        }
        Ok(Response::new(RestartSessionResponse {}))
    }

    async fn stop_session(
        &self,
        req: Request<StopSessionRequest>,
    ) -> Result<Response<StopSessionResponse>, Status> {
        self.member.stop_for_good(&req.get_ref().session_id).await?;
        Ok(Response::new(StopSessionResponse {}))
    }

    async fn logout_session(
        &self,
        req: Request<LogoutSessionRequest>,
    ) -> Result<Response<LogoutSessionResponse>, Status> {
        self.member
            .local()
            .logout(&req.get_ref().session_id)
            .await?;
        Ok(Response::new(LogoutSessionResponse {}))
    }

    async fn check_numbers(
        &self,
        req: Request<CheckNumbersRequest>,
    ) -> Result<Response<CheckNumbersResponse>, Status> {
        let m = req.into_inner();
        let numbers = self
            .member
            .local()
            .check_numbers(&m.session_id, &m.phones)
            .await?
            .into_iter()
            .map(|(phone, on_whatsapp)| NumberAnswer { phone, on_whatsapp })
            .collect();
        Ok(Response::new(CheckNumbersResponse { numbers }))
    }

    async fn nudge(&self, req: Request<NudgeRequest>) -> Result<Response<NudgeResponse>, Status> {
        let ids = req.into_inner().session_ids;
        if ids.is_empty() {
            self.member.wake();
        }
        for id in ids {
            self.member.local().notify_outbound(&id);
        }
        Ok(Response::new(NudgeResponse {}))
    }
}

/// A stream fed by a task through a bounded channel.
fn async_stream<T, F, Fut>(f: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
