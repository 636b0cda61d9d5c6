//! Several nodes on one database: who runs which session, failover, and any node answering
//! any call.
//!
//! - Ownership is a lease per session in the database (`storage::cluster`), with an epoch
//!   that fences every write of the session; a node renews all its leases in one statement
//!   and cuts its sessions off on its own clock before they can expire ([`membership`],
//!   `sessions::fence`).
//! - [`membership`] is the node's loop: heartbeat and renewal, claiming sessions nobody runs
//!   (failover, new sessions) up to a fair share, handing one over at a time when the spread
//!   is uneven (a node joined), draining, and the hand-over of everything at shutdown.
//! - [`router`]: [`ClusterSessions`], the `SessionControl` the domain holds. A call about a
//!   session runs here when this node owns it and is forwarded to the owner otherwise
//!   ([`peers`]: an internal gRPC service signed with a key derived from the master key).
//!   Durable things (queued messages, events, webhooks, history) need no forwarding: they
//!   are in the database every node reads.
//!
//! SQLite runs the same code with one node (a second process on the file is refused by a
//! file lock, see [`single_node_lock`]).

pub mod membership;
pub mod peers;
pub mod router;

pub use membership::Membership;
pub use router::ClusterSessions;

use std::time::Duration;

use crate::error::{Error, Result};

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// A lease not renewed for this long may be claimed by another node.
    pub lease_ttl: Duration,
    /// How often a node renews its leases (at most a third of the TTL makes sense).
    pub lease_renew: Duration,
    /// How often a node looks for sessions to claim or to hand over.
    pub balance_interval: Duration,
    /// Where other nodes reach this one (its REST/gRPC port); `None`: the address it
    /// listens on (the host name when that is a wildcard address).
    pub advertise_url: Option<String>,
    /// Sessions this node runs at most; `None` is unlimited.
    pub max_sessions: Option<i64>,
    /// Sessions a node hands over per minute to even out the spread.
    pub moves_per_minute: u32,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            lease_ttl: Duration::from_secs(15),
            lease_renew: Duration::from_secs(5),
            balance_interval: Duration::from_secs(1),
            advertise_url: None,
            max_sessions: None,
            moves_per_minute: 30,
        }
    }
}

impl ClusterSettings {
    /// The advertised address, from the listening one when none is set.
    pub fn advertise_url_for(&self, listening: std::net::SocketAddr) -> String {
        if let Some(u) = self.advertise_url.as_deref().filter(|u| !u.is_empty()) {
            return u.trim_end_matches('/').to_owned();
        }
        if listening.ip().is_unspecified() {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            format!("http://{host}:{}", listening.port())
        } else {
            format!("http://{listening}")
        }
    }

    /// How long before its lease expires (on its own clock) a node cuts its sessions off: the
    /// renewal it last saw succeed was sent before the database set the expiry, so the margin
    /// covers clock rate differences and the time the cut itself takes.
    pub fn fence_margin(&self) -> Duration {
        (self.lease_ttl / 5).max(Duration::from_millis(500))
    }

    pub fn validate(&self) -> Result<()> {
        if self.lease_renew * 2 > self.lease_ttl {
            return Err(Error::InvalidRequest(format!(
                "the lease renew period ({:?}) must be at most half the lease TTL ({:?})",
                self.lease_renew, self.lease_ttl
            )));
        }
        if self.fence_margin() >= self.lease_ttl - self.lease_renew {
            return Err(Error::InvalidRequest(
                "the lease TTL is too short for its renew period".into(),
            ));
        }
        Ok(())
    }
}

/// SQLite is one node: an exclusive lock on `<database>.lock`, held for the life of the
/// process, makes a second `wagate serve` on the same file refuse to start (the lock goes
/// with the process, even after `kill -9`).
pub fn single_node_lock(sqlite_path: &str) -> Result<Option<std::fs::File>> {
    if sqlite_path.is_empty() || sqlite_path == ":memory:" || sqlite_path.starts_with("file:") {
        return Ok(None);
    }
    let lock_path = format!("{sqlite_path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Internal(format!("cannot open {lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable(format!(
            "another wagate process runs on {sqlite_path}: SQLite is single-node (use PostgreSQL for several nodes)"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Internal(format!("cannot lock {lock_path}: {e}")))
        }
    }
}
