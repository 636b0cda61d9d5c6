//! `wagate.v1.ClusterService` over the service layer. The auth middleware resolves the
//! operator token into an [`Operator`]; a call without one is refused here.

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use crate::domain::Gateway;
use crate::domain::cluster::{NodeState as S, NodeView, Operator};
use crate::error::Error;
use crate::proto::v1::cluster_service_server::ClusterService;
use crate::proto::v1::*;

pub struct ClusterApi {
    gw: Gateway,
}

impl ClusterApi {
    pub fn new(gw: Gateway) -> Self {
        ClusterApi { gw }
    }
}

fn operator<T>(req: &Request<T>) -> Result<Operator, Status> {
    req.extensions()
        .get::<Operator>()
        .cloned()
        .ok_or_else(|| Error::NoToken.into())
}

fn node_to_proto(n: NodeView) -> Node {
    Node {
        node_id: n.node_id,
        advertise_url: n.advertise_url,
        version: n.version,
        state: match n.state {
            S::Live => NodeState::Live,
            S::Draining => NodeState::Draining,
            S::Dead => NodeState::Dead,
            S::Stopped => NodeState::Stopped,
        } as i32,
        started_at: Some(timestamp(n.started_at)),
        heartbeat_age_ms: n.heartbeat_age_ms,
        sessions_owned: n.sessions_owned,
        max_sessions: n.max_sessions,
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let op = operator(&req)?;
        let v = self.gw.cluster_view(&op).await?;
        Ok(Response::new(ListNodesResponse {
            nodes: v.nodes.into_iter().map(node_to_proto).collect(),
            sessions_wanted: v.sessions_wanted,
            answered_by: v.answered_by,
        }))
    }

    async fn drain_node(
        &self,
        req: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        let op = operator(&req)?;
        self.gw
            .set_node_draining(&op, &req.get_ref().node_id, true)
            .await?;
        Ok(Response::new(DrainNodeResponse {}))
    }

    async fn resume_node(
        &self,
        req: Request<ResumeNodeRequest>,
    ) -> Result<Response<ResumeNodeResponse>, Status> {
        let op = operator(&req)?;
        self.gw
            .set_node_draining(&op, &req.get_ref().node_id, false)
            .await?;
        Ok(Response::new(ResumeNodeResponse {}))
    }
}
