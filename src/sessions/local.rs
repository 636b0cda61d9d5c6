//! The sessions running in this process, one slot and one supervisor task each.
//!
//! A session runs here only under a lease this node holds (`storage::cluster`): every slot
//! carries its lease's [`Fence`], every write a session makes passes it ([`Slot::write`]), and
//! every WhatsApp connection goes through the slot's [`Gate`] (the self-fence). Which
//! sessions run here is decided by the cluster's membership loop; what callers ask of a
//! session is routed here by `cluster::ClusterSessions` when this node owns it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use whatsapp_rust::Client;

use super::control::{SessionState, Snapshot};
use super::fence::{Gate, LeaseClock};
use super::{Connector, DeviceStores, supervisor};
use crate::domain::broadcasts::pacing::Policy;
use crate::error::{Error, Result};
use crate::storage::cluster::{self, Fence, Held};
use crate::storage::messages::queue;
use crate::storage::{Db, DbConn, now_ms, sessions};
use crate::values::{ProjectId, SessionId};

pub(crate) struct Slot {
    pub device_id: SessionId,
    pub project_id: ProjectId,
    /// The lease this session runs under.
    pub fence: Fence,
    /// Its connections to WhatsApp.
    pub gate: Arc<Gate>,
    pub snapshot: watch::Sender<Snapshot>,
    pub client: Mutex<Option<Arc<Client>>>,
    /// Wakes the outbound worker when a message is accepted.
    pub wake: Notify,
    pub stop: watch::Sender<bool>,
    /// A fenced write was refused: another node owns the session now.
    pub lost: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Slot {
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.snapshot.send_modify(f);
    }

    pub fn client(&self) -> Option<Arc<Client>> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs a write of this session in one transaction with the check of its lease: a
    /// node that lost the lease writes nothing (`SessionMoved`), and its supervisor stops.
    /// Returns once the commit is on disk.
    pub async fn write<T, F>(&self, db: &Db, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T> + Send + 'static,
    {
        self.write_as(db, false, f).await
    }

    /// [`Self::write`] whose commit does not wait for the disk: for what a replay repairs
    /// (see [`Db::run_relaxed`]).
    pub async fn write_relaxed<T, F>(&self, db: &Db, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T> + Send + 'static,
    {
        self.write_as(db, true, f).await
    }

    async fn write_as<T, F>(&self, db: &Db, relaxed: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T> + Send + 'static,
    {
        let fence = self.fence.clone();
        // A durable write commits relaxed too, then waits for the shared flush: on SQLite
        // no session holds the write lock across an fsync, and waits that overlap share one.
        let fenced = move |c: &mut DbConn| {
            c.relaxed_transaction(|c| {
                cluster::check_fence(c, &fence)?;
                f(c)
            })
        };
        let mut r = db.run(fenced).await;
        if !relaxed
            && r.is_ok()
            && let Err(e) = db.make_durable().await
        {
            r = Err(e);
        }
        if matches!(r, Err(Error::SessionMoved)) {
            self.lost.notify_one();
        }
        r
    }
}

pub(crate) struct Inner {
    pub db: Db,
    pub node: String,
    pub connector: Connector,
    pub stores: Arc<dyn DeviceStores>,
    pub clock: Arc<LeaseClock>,
    /// Logins in progress at once (see [`LOGINS_AT_ONCE`]).
    pub logins: Arc<tokio::sync::Semaphore>,
    /// The send policy of projects that set none (typing, pacing of every message).
    pub pacing: Policy,
    slots: Mutex<HashMap<SessionId, Arc<Slot>>>,
}

impl Inner {
    /// Drops the slot of a session that moved to another node (if it is still this one).
    pub fn forget(&self, slot: &Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots
            .get(&slot.device_id)
            .is_some_and(|s| s.fence == slot.fence)
        {
            slots.remove(&slot.device_id);
        }
    }
}

/// Runs the sessions of this node.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

/// How often the node looks for sessions with a message due (retries, ack deadlines, accepts
/// whose wake did not reach this node): the longest such a message waits.
const DUE_SCAN: Duration = Duration::from_secs(2);
/// Sessions woken per scan at most (the rest on the next one).
const DUE_SCAN_LIMIT: i64 = 10_000;

/// Sessions logging in at once. A node restoring thousands of sessions would otherwise start
/// every handshake together: each then takes longer than WhatsApp's timeouts, fails, and
/// retries with the rest. A queue of logins finishes them at the rate the CPU allows.
pub(crate) const LOGINS_AT_ONCE: usize = 128;

/// How long a graceful stop of one session may take before it is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl SessionManager {
    pub fn new(
        db: Db,
        node: String,
        connector: Connector,
        stores: Arc<dyn DeviceStores>,
        clock: Arc<LeaseClock>,
        pacing: Policy,
    ) -> Self {
        SessionManager {
            inner: Arc::new(Inner {
                db,
                node,
                connector,
                stores,
                clock,
                pacing,
                logins: Arc::new(tokio::sync::Semaphore::new(LOGINS_AT_ONCE)),
                slots: Mutex::default(),
            }),
        }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    fn slot(&self, device_id: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .cloned()
    }

    /// The leases of the sessions running here.
    pub fn running(&self) -> Vec<Fence> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.fence.clone())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn runs(&self, device_id: &str) -> bool {
        self.slot(device_id).is_some()
    }

    /// Wakes the outbound worker of every session running here that has a message due, every
    /// [`DUE_SCAN`], until `stop`: one query for the whole node instead of a timer per session.
    pub async fn run_due_scan(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(DUE_SCAN) => {}
                _ = stop.changed() => return,
            }
            if self.count() == 0 {
                continue;
            }
            let due = self
                .inner
                .db
                .run(|c| queue::due_sessions(c, now_ms(), DUE_SCAN_LIMIT))
                .await;
            match due {
                Ok(ids) => {
                    for id in ids {
                        self.notify_outbound(&id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "due-message scan failed"),
            }
        }
    }

    /// Sessions running here that are connected and linked: the ones a rebalance moves
    /// (a session showing a QR code would lose it).
    pub fn movable(&self) -> Vec<Fence> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.snapshot.borrow().state == SessionState::Connected)
            .map(|s| s.fence.clone())
            .collect()
    }

    /// Starts the session of a stored row under `fence` unless it is already running.
    fn start_row(&self, row: sessions::SessionRow, fence: Fence) {
        let device_id = row.id.as_str();
        let initial = Snapshot {
            state: if row.wa_jid.is_some() {
                SessionState::Connecting
            } else {
                SessionState::Pending
            },
            reason: None,
            phone: row.phone.clone(),
            push_name: row.push_name.clone(),
            last_connected_at: row.last_connected_at,
            ..Snapshot::default()
        };
        let slot = Arc::new(Slot {
            device_id: row.id.clone(),
            project_id: row.project_id.clone(),
            fence,
            gate: Gate::new(self.inner.clock.clone()),
            snapshot: watch::channel(initial).0,
            client: Mutex::new(None),
            wake: Notify::new(),
            stop: watch::channel(false).0,
            lost: Notify::new(),
            task: Mutex::new(None),
        });
        {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            if slots.contains_key(device_id) {
                return;
            }
            slots.insert(row.id.clone(), slot.clone());
        }
        let task = tokio::spawn(supervisor::supervise(self.inner.clone(), slot.clone()));
        *slot.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    fn take_slot(&self, device_id: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device_id)
    }

    /// Stops a session's client gracefully; its store is kept. Answers the lease it ran
    /// under.
    async fn stop_slot(&self, device_id: &str) -> Option<Fence> {
        let slot = self.take_slot(device_id)?;
        let _ = slot.stop.send(true);
        let task = slot.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout(STOP_TIMEOUT * 2, &mut task)
                .await
                .is_err()
        {
            task.abort();
            slot.gate.cut().await;
        }
        Some(slot.fence.clone())
    }

    /// Runs sessions whose leases this node just claimed: marks the linked ones
    /// `connecting` (fenced by the claim itself, in one statement), then starts each.
    pub async fn run_claimed(&self, held: Vec<Held>, reason: &'static str) -> Result<usize> {
        if held.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = held.iter().map(|h| h.device_id.clone()).collect();
        let node = self.inner.node.clone();
        let rows = self
            .inner
            .db
            .run(move |c| {
                c.transaction(|c| {
                    queue::void_claims(c, &ids, &node)?;
                    sessions::begin_run(c, &ids, reason, now_ms())
                })
            })
            .await?;
        let epochs: HashMap<&str, i64> = held
            .iter()
            .map(|h| (h.device_id.as_str(), h.epoch))
            .collect();
        let mut started = 0;
        for row in rows {
            if let Some(&epoch) = epochs.get(row.id.as_str()) {
                let fence = Fence {
                    device_id: row.id.to_string(),
                    node: self.inner.node.clone(),
                    epoch,
                };
                self.start_row(row, fence);
                started += 1;
            }
        }
        Ok(started)
    }

    /// Starts one session under a lease this node holds (idempotent).
    pub async fn start_held(&self, held: Held) -> Result<()> {
        if self.runs(&held.device_id) {
            return Ok(());
        }
        let id = held.device_id.clone();
        let row = self
            .inner
            .db
            .run(move |c| sessions::get(c, &SessionId::from(id.as_str())))
            .await?
            .ok_or(Error::DeviceNotFound)?;
        let fence = Fence {
            device_id: row.id.to_string(),
            node: self.inner.node.clone(),
            epoch: held.epoch,
        };
        self.start_row(row, fence);
        Ok(())
    }

    /// Cuts a session off at once: its WhatsApp connection is dropped without a flush and
    /// its tasks aborted, and nothing of it is written (its lease is gone or going).
    pub async fn cut(&self, device_id: &str) {
        if let Some(slot) = self.take_slot(device_id) {
            slot.gate.cut().await;
            let _ = slot.stop.send(true);
            if let Some(task) = slot.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
            if let Some(client) = slot.client() {
                // The connection is gone already; this ends the client's own tasks.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(STOP_TIMEOUT, client.disconnect()).await;
                });
            }
        }
    }

    /// [`Self::cut`] for every session of this node (the self-fence).
    pub async fn cut_all(&self) {
        let ids: Vec<String> = self.running().into_iter().map(|f| f.device_id).collect();
        futures::future::join_all(ids.iter().map(|id| self.cut(id))).await;
    }

    /// Stops every session (graceful shutdown), in parallel, and records the live ones as
    /// `disconnected` (a QR that can no longer be scanned as `pending`) so their stored state
    /// does not claim a connection nobody holds. Terminal states (banned, failed, …) stay:
    /// the stored state decides, so one written just before the stop is kept. Answers the
    /// leases the sessions ran under, for release.
    pub async fn shutdown(&self) -> Vec<Fence> {
        let live: Vec<String> = self.running().into_iter().map(|f| f.device_id).collect();
        let fences: Vec<Fence> =
            futures::future::join_all(live.iter().map(|id| self.stop_slot(id)))
                .await
                .into_iter()
                .flatten()
                .collect();
        if fences.is_empty() {
            return fences;
        }
        let now = now_ms();
        let reason = Some("gateway stopped");
        let running = [
            SessionState::Connected.as_str(),
            SessionState::Connecting.as_str(),
            SessionState::Disconnected.as_str(),
        ];
        let pairing = [SessionState::Qr.as_str()];
        let held = fences.clone();
        if let Err(e) = self
            .inner
            .db
            .run(move |c| {
                c.transaction(|c| {
                    // Only sessions whose lease is still ours: a moved one is another's now.
                    let mut ours = Vec::with_capacity(held.len());
                    for f in &held {
                        if cluster::check_fence(c, f).is_ok() {
                            ours.push(SessionId::from(f.device_id.as_str()));
                        }
                    }
                    sessions::set_states_from(c, &ours, &running, "disconnected", reason, now)?;
                    sessions::set_states_from(c, &ours, &pairing, "pending", reason, now)
                })
            })
            .await
        {
            tracing::warn!(error = %e, "cannot record the sessions as stopped");
        }
        fences
    }

    // -- what callers ask of a session running here (routed by `cluster::ClusterSessions`)

    /// Stops a session gracefully (also to hand it over); answers the lease it ran under.
    pub async fn stop(&self, device_id: &str) -> Option<Fence> {
        self.stop_slot(device_id).await
    }

    /// Stops, then starts the session under the same lease (its back-off starts over).
    pub async fn restart(&self, device_id: &str) -> Result<bool> {
        let Some(fence) = self.stop_slot(device_id).await else {
            return Ok(false);
        };
        let id = device_id.to_owned();
        let row = self
            .inner
            .db
            .run(move |c| sessions::get(c, &SessionId::from(id.as_str())))
            .await?
            .ok_or(Error::DeviceNotFound)?;
        self.start_row(row, fence);
        Ok(true)
    }

    pub fn snapshot(&self, device_id: &str) -> Option<Snapshot> {
        self.slot(device_id).map(|s| Snapshot {
            node: Some(self.inner.node.clone()),
            ..s.snapshot.borrow().clone()
        })
    }

    /// The live state of a session running here (`node` is not set on these values: they
    /// are this node's).
    pub fn watch(&self, device_id: &str) -> Option<watch::Receiver<Snapshot>> {
        self.slot(device_id).map(|s| s.snapshot.subscribe())
    }

    /// A pairing code from the session running here.
    pub async fn pairing_code(&self, device_id: &str, phone: &str) -> Result<String> {
        let slot = self.slot(device_id).ok_or(Error::SessionMoved)?;
        // The client exists once the supervisor has built it.
        let mut rx = slot.snapshot.subscribe();
        let client = loop {
            if let Some(c) = slot.client() {
                break c;
            }
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .map_err(|_| Error::WhatsAppUnavailable("the session is not ready yet".into()))?
                .map_err(|_| Error::WhatsAppUnavailable("the session stopped".into()))?;
        };
        let opts = whatsapp_rust::pair_code::PairCodeOptions {
            phone_number: phone.to_owned(),
            ..Default::default()
        };
        let code = tokio::time::timeout(Duration::from_secs(30), client.pair_with_code(opts))
            .await
            .map_err(|_| {
                Error::WhatsAppUnavailable("WhatsApp did not answer the pairing request".into())
            })?
            .map_err(|e| Error::WhatsAppUnavailable(format!("the pairing request failed: {e}")))?;
        slot.update(|s| s.pairing_code = Some((code.clone(), now_ms() + 180_000)));
        Ok(code)
    }

    /// Which of `phones` are on WhatsApp, asked through the session running here (see
    /// `SessionControl::check_numbers`).
    pub async fn check_numbers(
        &self,
        device_id: &str,
        phones: &[String],
    ) -> Result<Vec<(String, bool)>> {
        let slot = self.slot(device_id).ok_or(Error::SessionMoved)?;
        if phones.len() > super::MAX_NUMBERS_PER_QUERY {
            return Err(Error::InvalidRequest(format!(
                "at most {} numbers per query",
                super::MAX_NUMBERS_PER_QUERY
            )));
        }
        let connected = slot.snapshot.borrow().state == SessionState::Connected;
        let client = slot
            .client()
            .filter(|_| connected)
            .ok_or_else(|| Error::WhatsAppUnavailable("the session is not connected".into()))?;
        let jids: Vec<whatsapp_rust::Jid> = phones
            .iter()
            .map(|p| whatsapp_rust::Jid::pn(p.clone()))
            .collect();
        let answers = tokio::time::timeout(
            Duration::from_secs(30),
            client.contacts().is_on_whatsapp(&jids),
        )
        .await
        .map_err(|_| Error::WhatsAppUnavailable("WhatsApp did not answer the number check".into()))?
        .map_err(|e| Error::WhatsAppUnavailable(format!("the number check failed: {e}")))?;
        // Answers name the number asked about (a PN query), or carry it as `pn_jid`.
        Ok(answers
            .into_iter()
            .filter_map(|a| {
                let pn = if a.jid.is_pn() {
                    Some(&a.jid)
                } else {
                    a.pn_jid.as_ref()
                }?;
                phones
                    .iter()
                    .find(|p| **p == pn.user)
                    .map(|p| (p.clone(), a.is_registered))
            })
            .collect())
    }

    /// Logs the session out: tells WhatsApp when its client runs here (bounded, best
    /// effort), stops it, wipes its device store, stores it as `logged_out` with its
    /// account cleared, and drops its lease (it runs nowhere). Works whether or not it runs.
    pub async fn logout(&self, device_id: &str) -> Result<()> {
        if let Some(client) = self.slot(device_id).and_then(|s| s.client()) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, client.logout()).await;
        }
        self.stop_slot(device_id).await;
        self.inner.stores.wipe(device_id).await?;
        let id = SessionId::from(device_id);
        self.inner
            .db
            .run(move |c| {
                c.transaction(|c| {
                    cluster::unwant(c, &id)?;
                    sessions::clear_account(
                        c,
                        &id,
                        SessionState::LoggedOut.as_str(),
                        Some("logged out by request"),
                        now_ms(),
                    )
                })
            })
            .await
    }

    pub fn notify_outbound(&self, device_id: &str) -> bool {
        match self.slot(device_id) {
            Some(s) => {
                s.wake.notify_one();
                true
            }
            None => false,
        }
    }
}
