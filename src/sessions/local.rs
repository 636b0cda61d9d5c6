//! The local implementation of [`SessionControl`]: the sessions running in this process, one
//! slot and one supervisor task each, plus the node's own lifecycle of them (restore every
//! linked session at start, stop them all at shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use whatsapp_rust::Client;

use super::control::{SessionControl, SessionState, Snapshot};
use super::{Connector, DeviceStores, supervisor};
use crate::error::{Error, Result};
use crate::storage::{Db, now_ms, sessions};
use crate::values::{ProjectId, SessionId};

pub(crate) struct Slot {
    pub device_id: SessionId,
    pub project_id: ProjectId,
    pub snapshot: watch::Sender<Snapshot>,
    pub client: Mutex<Option<Arc<Client>>>,
    /// Wakes the outbound worker when a message is accepted.
    pub wake: Notify,
    pub stop: watch::Sender<bool>,
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
}

pub(crate) struct Inner {
    pub db: Db,
    pub node: String,
    pub connector: Connector,
    pub stores: Arc<dyn DeviceStores>,
    slots: Mutex<HashMap<SessionId, Arc<Slot>>>,
}

/// Runs the sessions of this node.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

/// How long a graceful stop of one session may take before it is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl SessionManager {
    pub fn new(db: Db, node: String, connector: Connector, stores: Arc<dyn DeviceStores>) -> Self {
        SessionManager {
            inner: Arc::new(Inner {
                db,
                node,
                connector,
                stores,
                slots: Mutex::default(),
            }),
        }
    }

    fn slot(&self, device_id: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .cloned()
    }

    /// Starts the session of a stored row unless it is already running.
    fn start_row(&self, row: sessions::SessionRow) {
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
            snapshot: watch::channel(initial).0,
            client: Mutex::new(None),
            wake: Notify::new(),
            stop: watch::channel(false).0,
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

    /// Stops a session's client gracefully; its store is kept.
    async fn stop_slot(&self, device_id: &str) {
        let slot = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device_id);
        if let Some(slot) = slot {
            let _ = slot.stop.send(true);
            let task = slot.task.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(mut task) = task
                && tokio::time::timeout(STOP_TIMEOUT * 2, &mut task)
                    .await
                    .is_err()
            {
                task.abort();
            }
        }
    }

    /// Brings back every linked session at start: marks them all `connecting` in one
    /// statement, then starts each (they connect concurrently).
    pub async fn restore_all(&self) -> Result<usize> {
        let rows = self
            .inner
            .db
            .run(|c| sessions::begin_restore(c, now_ms()))
            .await?;
        let n = rows.len();
        for row in rows {
            self.start_row(row);
        }
        Ok(n)
    }

    /// Stops every session (graceful shutdown), in parallel, and records the live ones as
    /// `disconnected` (a QR that can no longer be scanned as `pending`) so their stored state
    /// does not claim a connection nobody holds. Terminal states (banned, failed, …) stay:
    /// the stored state decides, so one written just before the stop is kept.
    pub async fn shutdown(&self) {
        let live: Vec<SessionId> = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        futures::future::join_all(live.iter().map(|id| self.stop_slot(id))).await;
        if live.is_empty() {
            return;
        }
        let now = now_ms();
        let reason = Some("gateway stopped");
        let running = [
            SessionState::Connected.as_str(),
            SessionState::Connecting.as_str(),
            SessionState::Disconnected.as_str(),
        ];
        let pairing = [SessionState::Qr.as_str()];
        if let Err(e) = self
            .inner
            .db
            .run(move |c| {
                sessions::set_states_from(c, &live, &running, "disconnected", reason, now)?;
                sessions::set_states_from(c, &live, &pairing, "pending", reason, now)
            })
            .await
        {
            tracing::warn!(error = %e, "cannot record the sessions as stopped");
        }
    }
}

#[async_trait::async_trait]
impl SessionControl for SessionManager {
    async fn start(&self, device_id: &str) -> Result<()> {
        if self.slot(device_id).is_some() {
            return Ok(());
        }
        let id = SessionId::from(device_id);
        let row = self
            .inner
            .db
            .run(move |c| sessions::get(c, &id))
            .await?
            .ok_or(Error::DeviceNotFound)?;
        self.start_row(row);
        Ok(())
    }

    async fn stop(&self, device_id: &str) -> Result<()> {
        self.stop_slot(device_id).await;
        Ok(())
    }

    async fn restart(&self, device_id: &str) -> Result<()> {
        self.stop_slot(device_id).await;
        self.start(device_id).await
    }

    async fn snapshot(&self, device_id: &str) -> Option<Snapshot> {
        self.slot(device_id).map(|s| s.snapshot.borrow().clone())
    }

    async fn watch(&self, device_id: &str) -> Option<watch::Receiver<Snapshot>> {
        self.slot(device_id).map(|s| s.snapshot.subscribe())
    }

    async fn pairing_code(&self, device_id: &str, phone: &str) -> Result<String> {
        self.start(device_id).await?;
        let slot = self.slot(device_id).ok_or(Error::DeviceNotFound)?;
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

    async fn logout(&self, device_id: &str) -> Result<()> {
        if let Some(client) = self.slot(device_id).and_then(|s| s.client()) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, client.logout()).await;
        }
        self.stop_slot(device_id).await;
        self.inner.stores.wipe(device_id).await?;
        let id = SessionId::from(device_id);
        self.inner
            .db
            .run(move |c| {
                sessions::clear_account(
                    c,
                    &id,
                    SessionState::LoggedOut.as_str(),
                    Some("logged out by request"),
                    now_ms(),
                )
            })
            .await
    }

    async fn delete(&self, device_id: &str) -> Result<()> {
        self.logout(device_id).await?;
        let id = SessionId::from(device_id);
        self.inner.db.run(move |c| sessions::delete(c, &id)).await?;
        Ok(())
    }

    fn notify_outbound(&self, device_id: &str) {
        if let Some(s) = self.slot(device_id) {
            s.wake.notify_one();
        }
    }
}
