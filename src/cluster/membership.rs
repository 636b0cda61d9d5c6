//! A node's part in the cluster: one loop that renews, fences, claims and balances.
//!
//! Every `lease_renew` the node renews its heartbeat and all its leases in one transaction
//! (database clock). A renewal that does not come back in time leaves the [`LeaseClock`] to
//! run out: the node then cuts every session off (no frame leaves once the clock ran out,
//! whatever its tasks are doing) and claims nothing until a renewal succeeds again, when it
//! rejoins by itself. A renewal that comes back without a lease the node runs means that
//! session is another node's now: it is cut at once.
//!
//! Every `balance_interval` a live node claims unowned leases (expired: failover; released:
//! hand-over; new sessions) up to its fair share `ceil(wanted / live nodes)` within its
//! budget; the most loaded node hands one connected session over when the spread between it
//! and the least loaded node with room is two or more (at most `moves_per_minute`), so a node
//! that joins gets its share without anyone restarting. A draining node hands everything
//! over and claims nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::ClusterSettings;
use super::peers::Peers;
use crate::error::{Error, Result};
use crate::sessions::SessionManager;
use crate::sessions::fence::LeaseClock;
use crate::storage::Db;
use crate::storage::cluster::{self, Fence, NodeRecord, NodeStatus, Registration};

pub struct Membership {
    db: Db,
    local: SessionManager,
    record: NodeRecord,
    settings: ClusterSettings,
    clock: Arc<LeaseClock>,
    peers: Peers,
    draining: AtomicBool,
    /// No other live node at the last balancing (nothing to forward to).
    alone: AtomicBool,
    wake: Notify,
}

impl Membership {
    pub fn new(
        db: Db,
        local: SessionManager,
        record: NodeRecord,
        settings: ClusterSettings,
        clock: Arc<LeaseClock>,
        peers: Peers,
    ) -> Arc<Self> {
        Arc::new(Membership {
            db,
            local,
            record,
            settings,
            clock,
            peers,
            draining: AtomicBool::new(false),
            alone: AtomicBool::new(true),
            wake: Notify::new(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.record.id
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Runs the balancing now (sessions were released somewhere, or one was created).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// No other node was live at the last balancing.
    pub fn alone(&self) -> bool {
        self.alone.load(Ordering::Relaxed)
    }

    /// Whether this node may take one more session now.
    pub fn may_claim(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
            && self.clock.valid()
            && self
                .settings
                .max_sessions
                .is_none_or(|max| (self.local.count() as i64) < max)
    }

    pub fn ttl_ms(&self) -> i64 {
        self.settings.lease_ttl.as_millis() as i64
    }

    /// Registers the node and takes its first heartbeat. A fresh heartbeat under this id
    /// from another process (a previous one killed a moment ago, or a second one started
    /// by mistake) is waited out for up to two TTLs: a dead process's heartbeat ages past the
    /// TTL, a live one's does not, and then starting is refused. Leases still recorded under
    /// the id belong to the earlier process: they are released first, so nothing stays owned
    /// by a process that no longer runs it.
    pub async fn join(&self) -> Result<()> {
        let give_up = Instant::now() + self.settings.lease_ttl * 2;
        loop {
            let (rec, ttl) = (self.record.clone(), self.ttl_ms());
            let reg = self
                .db
                .run(move |c| {
                    let r = cluster::register(c, &rec, ttl)?;
                    if r == Registration::Registered {
                        cluster::release_all(c, &rec.id)?;
                    }
                    Ok(r)
                })
                .await?;
            match reg {
                Registration::Registered => break,
                Registration::InUse { heartbeat_age_ms } if Instant::now() < give_up => {
                    tracing::warn!(node = %self.record.id, heartbeat_age_ms, "another process holds this node id; waiting for its heartbeat to expire");
                    tokio::time::sleep(self.settings.lease_renew).await;
                }
                Registration::InUse { heartbeat_age_ms } => {
                    return Err(Error::Unavailable(format!(
                        "node id {:?} is in use by a running process (heartbeat {heartbeat_age_ms} ms ago); give each node its own --node-id",
                        self.record.id
                    )));
                }
            }
        }
        self.renew().await
    }

    /// Renews heartbeat and leases; cuts sessions whose lease is gone.
    async fn renew(&self) -> Result<()> {
        let sent = Instant::now();
        let (node, instance, ttl) = (
            self.record.id.clone(),
            self.record.instance.clone(),
            self.ttl_ms(),
        );
        let deadline = self
            .clock
            .remaining()
            .max(self.settings.lease_renew)
            .min(self.settings.lease_ttl);
        let beat = tokio::time::timeout(
            deadline,
            self.db
                .run(move |c| cluster::heartbeat(c, &node, &instance, ttl)),
        )
        .await
        .map_err(|_| Error::Unavailable("lease renewal timed out".into()))?;
        let beat = match beat {
            Ok(b) => b,
            Err(Error::SessionMoved) => {
                tracing::error!(node = %self.record.id, "another process took this node's id over: stopping every session");
                self.clock.invalidate();
                self.local.cut_all().await;
                return Err(Error::SessionMoved);
            }
            Err(e) => return Err(e),
        };
        let valid_for = self.settings.lease_ttl - self.settings.fence_margin();
        self.clock.renewed(sent, valid_for);
        ::metrics::histogram!("wagate_lease_renew_seconds").record(sent.elapsed().as_secs_f64());
        self.draining.store(beat.draining, Ordering::Release);
        for f in self.local.running() {
            let still = beat
                .held
                .iter()
                .any(|h| h.device_id == f.device_id && h.epoch == f.epoch);
            if !still {
                tracing::warn!(device = %f.device_id, "lease lost to another node; cutting the session off");
                ::metrics::counter!("wagate_session_handovers_total", "side" => "lost")
                    .increment(1);
                self.local.cut(&f.device_id).await;
            }
        }
        ::metrics::gauge!("wagate_sessions_owned").set(self.local.count() as f64);
        Ok(())
    }

    /// The node's loop, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut next_renew = Instant::now() + self.settings.lease_renew;
        let mut moves = MoveBudget::new(self.settings.moves_per_minute);
        let mut was_fenced = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.balance_interval) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
            if Instant::now() >= next_renew {
                let sent = Instant::now();
                match self.renew().await {
                    Ok(()) => {
                        next_renew = sent + self.settings.lease_renew;
                        if was_fenced {
                            tracing::info!(node = %self.record.id, "leases renewed again: rejoining the cluster");
                            was_fenced = false;
                        }
                    }
                    Err(Error::SessionMoved) => {
                        // Our id was taken over: register again once the other stops.
                        let (rec, ttl) = (self.record.clone(), self.ttl_ms());
                        let _ = self
                            .db
                            .run(move |c| cluster::register(c, &rec, ttl).map(drop))
                            .await;
                        next_renew = Instant::now() + self.settings.balance_interval;
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.record.id, error = %e, "cannot renew leases");
                        next_renew = Instant::now() + self.settings.balance_interval;
                    }
                }
            }
            if !self.clock.valid() {
                if self.local.count() > 0 {
                    tracing::error!(node = %self.record.id, sessions = self.local.count(), "leases could not be renewed in time: cutting every session off");
                    ::metrics::counter!("wagate_self_fences_total").increment(1);
                    self.local.cut_all().await;
                }
                was_fenced = true;
                continue;
            }
            if self.draining.load(Ordering::Acquire) {
                self.hand_over_all().await;
                continue;
            }
            if let Err(e) = self.balance(&mut moves).await {
                tracing::warn!(node = %self.record.id, error = %e, "cannot balance sessions");
            }
        }
    }

    /// Claims what this node should run now (at start: before `launch` returns, so no
    /// stored state from before the start is reported as current).
    pub async fn balance_now(&self) -> Result<()> {
        self.balance(&mut MoveBudget::new(0)).await
    }

    async fn balance(&self, moves: &mut MoveBudget) -> Result<()> {
        let ttl = self.ttl_ms();
        let (nodes, wanted) = self
            .db
            .run(|c| Ok((cluster::nodes(c)?, cluster::wanted_count(c)?)))
            .await?;
        let live: Vec<&NodeStatus> = nodes
            .iter()
            .filter(|n| {
                n.node.stopped_at.is_none()
                    && !n.node.draining
                    && n.node.heartbeat_at >= n.now - ttl
            })
            .collect();
        self.alone.store(
            live.iter().all(|n| n.node.id == self.record.id),
            Ordering::Relaxed,
        );
        let mine = self.local.count() as i64;
        let nodes_live = live.len().max(1) as i64;
        let share = (wanted + nodes_live - 1) / nodes_live;
        let cap = self.settings.max_sessions.map_or(share, |m| share.min(m));
        if mine < cap {
            let node = self.record.id.clone();
            let held = self
                .db
                .run(move |c| cluster::claim(c, &node, cap - mine, ttl))
                .await?;
            if !held.is_empty() {
                let takeovers = held
                    .iter()
                    .filter(|h| h.previous.as_deref().is_some_and(|p| p != self.record.id))
                    .count();
                if takeovers > 0 {
                    ::metrics::counter!("wagate_lease_takeovers_total").increment(takeovers as u64);
                }
                let n = held.len();
                self.local
                    .run_claimed(held, "taken over by this node of the cluster")
                    .await?;
                tracing::info!(node = %self.record.id, sessions = n, takeovers, "claimed sessions");
            }
            return Ok(());
        }
        // Spread: am I the most loaded, and is someone with room two or more below me?
        let me = self.record.id.as_str();
        let loads = live.iter().map(|n| {
            if n.node.id == me {
                (mine, n.node.id.as_str(), n.node.max_sessions)
            } else {
                (n.owned, n.node.id.as_str(), n.node.max_sessions)
            }
        });
        let most = loads
            .clone()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
        let least = loads
            .filter(|(owned, _, max)| max.is_none_or(|m| *owned < m))
            .min_by_key(|(owned, _, _)| *owned);
        if let (Some(most), Some(least)) = (most, least)
            && most.1 == me
            && most.0 - least.0 >= 2
            && moves.take()
            && let Some(f) = self.local.movable().into_iter().next()
        {
            tracing::info!(node = me, device = %f.device_id, to = least.1, "handing a session over to even out the spread");
            self.release_one(&f.device_id).await;
            self.peers.wake_all();
        }
        Ok(())
    }

    /// Stops a session for good: stopped here if it runs here, and its lease dropped so no
    /// node takes it (what a stop asked by a caller means, here or forwarded from another
    /// node).
    pub async fn stop_for_good(&self, device_id: &str) -> Result<()> {
        self.local.stop(device_id).await;
        let id = device_id.to_owned();
        self.db.run(move |c| cluster::unwant(c, &id)).await
    }

    /// Stops a session here gracefully and releases its lease for another node.
    pub async fn release_one(&self, device_id: &str) {
        if let Some(fence) = self.local.stop(device_id).await {
            ::metrics::counter!("wagate_session_handovers_total", "side" => "given").increment(1);
            self.release(fence).await;
        }
    }

    async fn release(&self, fence: Fence) {
        if let Err(e) = self.db.run(move |c| cluster::release(c, &fence)).await {
            tracing::warn!(error = %e, "cannot release a lease (it expires by itself)");
        }
    }

    async fn hand_over_all(&self) {
        let running = self.local.running();
        if running.is_empty() {
            return;
        }
        tracing::info!(node = %self.record.id, sessions = running.len(), "draining: handing every session over");
        futures::future::join_all(running.iter().map(|f| self.release_one(&f.device_id))).await;
        self.peers.wake_all();
    }

    /// Graceful stop: every session stopped here and its lease released at once (the other
    /// nodes are woken to claim them), then the node marked stopped.
    pub async fn leave(&self) {
        let fences = self.local.shutdown().await;
        let (node, instance) = (self.record.id.clone(), self.record.instance.clone());
        match self
            .db
            .run(move |c| cluster::leave(c, &node, &instance))
            .await
        {
            Ok(n) => {
                if n > 0 || !fences.is_empty() {
                    tracing::info!(node = %self.record.id, sessions = n, "handed every session over");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot release leases at shutdown (they expire by themselves)")
            }
        }
        self.clock.invalidate();
        if !fences.is_empty() {
            // Wake the others now rather than at their next balancing.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.peers.wake_others()).await;
        }
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    pub fn local(&self) -> &SessionManager {
        &self.local
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// At most `per_minute` hand-overs per minute, evenly spaced: a bucket of one token, so a
/// quiet period saves no burst of moves up.
struct MoveBudget {
    per_minute: u32,
    tokens: f64,
    at: Instant,
}

impl MoveBudget {
    fn new(per_minute: u32) -> Self {
        MoveBudget {
            per_minute,
            tokens: per_minute.min(1) as f64,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let rate = self.per_minute as f64 / 60.0;
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(1.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
