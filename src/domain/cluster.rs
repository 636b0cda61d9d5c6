//! The cluster as operators see it: its nodes, what each runs, draining one. Only an
//! [`Operator`] (the operator token) may read or change it.

use super::Gateway;
use crate::error::{Error, Result};
use crate::storage::cluster::{self, NodeStatus};

/// Proof that the caller presented the operator token (`WAGATE_ADMIN_TOKEN`). Only
/// [`Gateway::operator`] makes one.
#[derive(Debug, Clone)]
pub struct Operator(());

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Live,
    Draining,
    Dead,
    Stopped,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Draining => "draining",
            NodeState::Dead => "dead",
            NodeState::Stopped => "stopped",
        }
    }

    /// A node's state from its row, judged on the database clock with the lease TTL.
    pub fn of(n: &NodeStatus, ttl_ms: i64) -> Self {
        if n.node.stopped_at.is_some() {
            NodeState::Stopped
        } else if n.node.heartbeat_at < n.now - ttl_ms {
            NodeState::Dead
        } else if n.node.draining {
            NodeState::Draining
        } else {
            NodeState::Live
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeView {
    pub node_id: String,
    pub advertise_url: String,
    pub version: String,
    pub state: NodeState,
    pub started_at: i64,
    pub heartbeat_age_ms: i64,
    pub sessions_owned: i64,
    pub max_sessions: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub sessions_wanted: i64,
    pub answered_by: String,
}

/// The cluster read from the database (also what `wagate cluster status` prints).
pub fn view(conn: &mut crate::storage::DbConn, ttl_ms: i64, me: &str) -> Result<ClusterView> {
    let nodes = cluster::nodes(conn)?;
    let wanted = cluster::wanted_count(conn)?;
    Ok(ClusterView {
        nodes: nodes
            .iter()
            .map(|n| NodeView {
                node_id: n.node.id.clone(),
                advertise_url: n.node.advertise_url.clone(),
                version: n.node.version.clone(),
                state: NodeState::of(n, ttl_ms),
                started_at: n.node.started_at,
                heartbeat_age_ms: (n.now - n.node.heartbeat_at).max(0),
                sessions_owned: n.owned,
                max_sessions: n.node.max_sessions,
            })
            .collect(),
        sessions_wanted: wanted,
        answered_by: me.to_owned(),
    })
}

impl Gateway {
    /// The operator, when `bearer` is the configured operator token. Without a configured
    /// token the cluster endpoints are off.
    pub fn operator(&self, bearer: Option<&str>) -> Result<Operator> {
        let Some(expected) = self.settings().admin_token.as_deref() else {
            return Err(Error::OperatorApiDisabled);
        };
        let given = bearer.ok_or(Error::NoToken)?;
        if crate::crypto::tokens_match(given, expected) {
            Ok(Operator(()))
        } else {
            Err(Error::InvalidToken)
        }
    }

    /// Checks a node-to-node token for `path` (the internal gRPC service).
    pub fn verify_node_token(&self, token: Option<&str>, path: &str) -> Result<()> {
        token
            .and_then(|t| self.node_key().verify(t, path, crate::storage::now_ms()))
            .map(drop)
            .ok_or(Error::InvalidToken)
    }

    pub async fn cluster_view(&self, _: &Operator) -> Result<ClusterView> {
        let ttl = self.settings().cluster.lease_ttl.as_millis() as i64;
        let me = self.node_id().to_owned();
        self.db().run(move |c| view(c, ttl, &me)).await
    }

    /// Drains a node (it hands its sessions over and takes none) or resumes it.
    pub async fn set_node_draining(&self, _: &Operator, node: &str, draining: bool) -> Result<()> {
        super::text::no_nul("node id", node)?;
        let node = node.to_owned();
        if self
            .db()
            .run(move |c| cluster::set_draining(c, &node, draining))
            .await?
        {
            Ok(())
        } else {
            Err(Error::NodeNotFound)
        }
    }
}
