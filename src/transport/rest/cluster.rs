//! `GET /api/v1/cluster` and the drain/resume of a node, for operators, transcoded onto
//! `wagate.v1.ClusterService`. The operator token only (`Authorization: Bearer
//! <WAGATE_ADMIN_TOKEN>`); without a configured token they answer `404 OPERATOR_API_DISABLED`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{OperatorToken, secured};
use super::call;
use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::Path;
use crate::domain::Gateway;
use crate::domain::messaging::rfc3339;
use crate::proto::v1::cluster_service_server::ClusterService;
use crate::proto::v1::{DrainNodeRequest, ListNodesRequest, Node, NodeState, ResumeNodeRequest};
use crate::transport::grpc::cluster::ClusterApi;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<OperatorToken, _>(routes!(cluster_status)))
        .routes(secured::<OperatorToken, _>(routes!(drain_node)))
        .routes(secured::<OperatorToken, _>(routes!(resume_node)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeData {
    node_id: String,
    advertise_url: String,
    version: String,
    /// live, draining, dead or stopped
    state: &'static str,
    started_at: Option<String>,
    /// Milliseconds since its last heartbeat (database clock).
    heartbeat_age_ms: i64,
    sessions_owned: i64,
    /// Absent when unlimited.
    max_sessions: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterData {
    nodes: Vec<NodeData>,
    /// Sessions that should run (linked or being linked).
    sessions_wanted: i64,
}

fn node_data(n: Node) -> NodeData {
    let state = match NodeState::try_from(n.state).unwrap_or_default() {
        NodeState::Live => "live",
        NodeState::Draining => "draining",
        NodeState::Dead => "dead",
        NodeState::Stopped => "stopped",
        NodeState::Unspecified => "unknown",
    };
    NodeData {
        state,
        node_id: n.node_id,
        advertise_url: n.advertise_url,
        version: n.version,
        started_at: n
            .started_at
            .map(|t| rfc3339(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)),
        heartbeat_age_ms: n.heartbeat_age_ms,
        sessions_owned: n.sessions_owned,
        max_sessions: n.max_sessions,
    }
}

/// The nodes sharing the database: state, heartbeat age, sessions owned and budget.
#[utoipa::path(
    get, path = "/api/v1/cluster", tag = "cluster",
    extensions(("x-grpc-method" = json!("wagate.v1.ClusterService/ListNodes"))),
    responses(
        (status = 200, body = inline(Success<ClusterData>)),
        (status = 401, body = ErrorBody),
        (status = 404, description = "OPERATOR_API_DISABLED: no WAGATE_ADMIN_TOKEN", body = ErrorBody),
    )
)]
pub async fn cluster_status(
    State(gw): State<Gateway>,
    OperatorToken(op): OperatorToken,
) -> ApiResult {
    let r = call::answer(
        ClusterApi::new(gw.clone())
            .list_nodes(call::request_as(op, ListNodesRequest {}))
            .await,
    )?;
    let data = ClusterData {
        nodes: r.nodes.into_iter().map(node_data).collect(),
        sessions_wanted: r.sessions_wanted,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// The node hands every session over to the others and takes none; it keeps serving API
/// calls.
#[utoipa::path(
    post, path = "/api/v1/cluster/nodes/{node_id}/drain", tag = "cluster",
    extensions(("x-grpc-method" = json!("wagate.v1.ClusterService/DrainNode"))),
    params(("node_id" = String, Path, description = "the node's --node-id")),
    responses(
        (status = 200, body = inline(Success<Option<String>>)),
        (status = 401, body = ErrorBody), (status = 404, description = "NODE_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn drain_node(
    State(gw): State<Gateway>,
    OperatorToken(op): OperatorToken,
    Path(node_id): Path<String>,
) -> ApiResult {
    call::answer(
        ClusterApi::new(gw.clone())
            .drain_node(call::request_as(op, DrainNodeRequest { node_id }))
            .await,
    )?;
    Ok(success(StatusCode::OK, gw.node_id(), None::<String>))
}

/// A drained node takes sessions again.
#[utoipa::path(
    post, path = "/api/v1/cluster/nodes/{node_id}/resume", tag = "cluster",
    extensions(("x-grpc-method" = json!("wagate.v1.ClusterService/ResumeNode"))),
    params(("node_id" = String, Path, description = "the node's --node-id")),
    responses(
        (status = 200, body = inline(Success<Option<String>>)),
        (status = 401, body = ErrorBody), (status = 404, description = "NODE_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn resume_node(
    State(gw): State<Gateway>,
    OperatorToken(op): OperatorToken,
    Path(node_id): Path<String>,
) -> ApiResult {
    call::answer(
        ClusterApi::new(gw.clone())
            .resume_node(call::request_as(op, ResumeNodeRequest { node_id }))
            .await,
    )?;
    Ok(success(StatusCode::OK, gw.node_id(), None::<String>))
}
