//! WhatsApp sessions: one whatsapp-rust client per session, each under its own supervisor
//! task, so a failure or panic in one session never touches another.
//!
//! - [`SessionManager`] starts, stops and restores sessions and answers their state.
//! - `supervisor` runs one session: builds the bot on the session's device store, turns its
//!   events into state, inbound messages, acks and receipts, and restarts it with backoff.
//! - `outbound` sends the session's queued messages.
//! - `inbound` stores received messages before they are acknowledged to WhatsApp.

mod inbound;
mod outbound;
pub use outbound::wa_message_id;
mod supervisor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use whatsapp_rust::Client;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::transport::TransportFactory;

use crate::error::{Error, Result};
use crate::storage::{Db, now_ms, sessions};

/// Where sessions connect: WhatsApp's servers in production; tests inject a loopback
/// simulator's transport and media client.
#[derive(Clone)]
pub struct Connector {
    pub transport: Arc<dyn TransportFactory>,
    pub http: Arc<dyn HttpClient>,
    /// Fixed client version (skips fetching the current one over HTTP).
    pub version: Option<(u32, u32, u32)>,
}

impl Connector {
    pub fn whatsapp() -> Self {
        Connector {
            transport: Arc::new(whatsapp_rust::transport::TokioWebSocketTransportFactory::new()),
            http: Arc::new(whatsapp_rust::http::UreqHttpClient::new()),
            version: None,
        }
    }
}

/// The device stores of sessions (whatsapp-rust's `Backend`), one per session.
#[async_trait::async_trait]
pub trait DeviceStores: Send + Sync {
    fn open(&self, device_id: &str) -> Arc<dyn Backend>;
    /// Forgets everything of a session (after logout or delete).
    async fn wipe(&self, device_id: &str) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionState {
    #[default]
    Pending,
    Qr,
    Connecting,
    Connected,
    Disconnected,
    LoggedOut,
    Banned,
    Failed,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Qr => "qr",
            SessionState::Connecting => "connecting",
            SessionState::Connected => "connected",
            SessionState::Disconnected => "disconnected",
            SessionState::LoggedOut => "logged_out",
            SessionState::Banned => "banned",
            SessionState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "qr" => SessionState::Qr,
            "connecting" => SessionState::Connecting,
            "connected" => SessionState::Connected,
            "disconnected" => SessionState::Disconnected,
            "logged_out" => SessionState::LoggedOut,
            "banned" => SessionState::Banned,
            "failed" => SessionState::Failed,
            _ => SessionState::Pending,
        }
    }
}

/// A session's live state, as watchers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub state: SessionState,
    pub reason: Option<String>,
    /// The current pairing QR code and when it rotates.
    pub qr: Option<(String, i64)>,
    pub pairing_code: Option<(String, i64)>,
    pub phone: Option<String>,
    pub push_name: Option<String>,
    pub last_connected_at: Option<i64>,
}

pub(crate) struct Slot {
    pub device_id: String,
    pub project_id: String,
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
    slots: Mutex<HashMap<String, Arc<Slot>>>,
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

    /// Starts the session if it is not running; its state comes from storage.
    pub async fn start(&self, device_id: &str) -> Result<()> {
        if self.slot(device_id).is_some() {
            return Ok(());
        }
        let id = device_id.to_owned();
        let row = self
            .inner
            .db
            .run(move |c| sessions::get(c, &id))
            .await?
            .ok_or(Error::DeviceNotFound)?;
        self.start_row(row);
        Ok(())
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
    pub async fn stop(&self, device_id: &str) {
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

    pub async fn restart(&self, device_id: &str) -> Result<()> {
        self.stop(device_id).await;
        self.start(device_id).await
    }

    /// Logs the linked device out at WhatsApp and wipes its store; the slot stays.
    pub async fn logout(&self, device_id: &str) -> Result<()> {
        if let Some(client) = self.slot(device_id).and_then(|s| s.client()) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, client.logout()).await;
        }
        self.stop(device_id).await;
        self.inner.stores.wipe(device_id).await?;
        let id = device_id.to_owned();
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

    /// Logs out, wipes the store and removes the session.
    pub async fn delete(&self, device_id: &str) -> Result<()> {
        self.logout(device_id).await?;
        let id = device_id.to_owned();
        self.inner.db.run(move |c| sessions::delete(c, &id)).await?;
        Ok(())
    }

    /// Asks WhatsApp for an 8-character code to link by phone number.
    pub async fn pairing_code(&self, device_id: &str, phone: &str) -> Result<String> {
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

    /// The live state of a running session, or `None` when it is not running here.
    pub fn snapshot(&self, device_id: &str) -> Option<Snapshot> {
        self.slot(device_id).map(|s| s.snapshot.borrow().clone())
    }

    pub fn watch(&self, device_id: &str) -> Option<watch::Receiver<Snapshot>> {
        self.slot(device_id).map(|s| s.snapshot.subscribe())
    }

    /// A message was queued for this session: send without waiting for the next poll.
    pub fn notify_outbound(&self, device_id: &str) {
        if let Some(s) = self.slot(device_id) {
            s.wake.notify_one();
        }
    }

    /// Stops every session (graceful shutdown), in parallel, and records the live ones as
    /// `disconnected` (a QR that can no longer be scanned as `pending`) so their stored state
    /// does not claim a connection nobody holds. Terminal states (banned, failed, …) stay:
    /// the stored state decides, so one written just before the stop is kept.
    pub async fn shutdown(&self) {
        let live: Vec<String> = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        futures::future::join_all(live.iter().map(|id| self.stop(id))).await;
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

/// Adapters so shared (`Arc<dyn …>`) connectors can be handed to the bot builder.
pub(crate) struct SharedTransport(pub Arc<dyn TransportFactory>);

#[async_trait::async_trait]
impl TransportFactory for SharedTransport {
    async fn create_transport(
        &self,
    ) -> std::result::Result<
        (
            Arc<dyn whatsapp_rust::transport::Transport>,
            whatsapp_rust::async_channel::Receiver<whatsapp_rust::transport::TransportEvent>,
        ),
        whatsapp_rust::anyhow::Error,
    > {
        self.0.create_transport().await
    }
}

pub(crate) struct SharedHttp(pub Arc<dyn HttpClient>);

#[async_trait::async_trait]
impl HttpClient for SharedHttp {
    async fn execute(&self, request: HttpRequest) -> whatsapp_rust::anyhow::Result<HttpResponse> {
        self.0.execute(request).await
    }
}

/// Device stores in wagate's own database (see `storage::device_store`), their private key
/// material sealed with the master key.
pub struct DbStores {
    db: Db,
    key: crate::crypto::MasterKey,
}

impl DbStores {
    pub fn new(db: Db, key: crate::crypto::MasterKey) -> Self {
        DbStores { db, key }
    }
}

#[async_trait::async_trait]
impl DeviceStores for DbStores {
    fn open(&self, device_id: &str) -> Arc<dyn Backend> {
        Arc::new(crate::storage::device_store::DbDeviceStore::new(
            self.db.clone(),
            &self.key,
            device_id.to_owned(),
        ))
    }

    async fn wipe(&self, device_id: &str) -> Result<()> {
        let id = device_id.to_owned();
        self.db
            .run(move |c| crate::storage::device_store::wipe(c, &id).map(|_| ()))
            .await
    }
}
