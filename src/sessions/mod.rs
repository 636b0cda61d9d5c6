//! WhatsApp sessions: one whatsapp-rust client per session, each under its own supervisor
//! task, so a failure or panic in one session never touches another.
//!
//! - `control`: [`SessionControl`], what the domain asks of a running session, and
//!   [`SessionClient`], the handle the domain holds (the seam a remote implementation plugs
//!   into).
//! - `local`: [`SessionManager`], the sessions running in this process: it starts, stops
//!   and restores them and answers their state.
//! - `supervisor` runs one session: builds the bot on the session's device store, turns its
//!   events into state, inbound messages, acks and receipts, and restarts it with backoff.
//! - `outbound` sends the session's queued messages.
//! - `inbound` stores received messages before they are acknowledged to WhatsApp.

mod control;
pub use control::{SessionClient, SessionControl, SessionState, Snapshot};
mod local;
pub use local::SessionManager;
use local::{Inner, Slot};
mod inbound;
mod outbound;
pub use outbound::wa_message_id;
mod supervisor;

use std::sync::Arc;

use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::transport::TransportFactory;

use crate::error::Result;
use crate::storage::Db;

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

/// Device stores in wagate's own database (see `storage::devices`), their private key
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
        Arc::new(crate::storage::devices::DbDeviceStore::new(
            self.db.clone(),
            &self.key,
            device_id.to_owned(),
        ))
    }

    async fn wipe(&self, device_id: &str) -> Result<()> {
        let id = device_id.to_owned();
        self.db
            .run(move |c| crate::storage::devices::wipe(c, &id).map(|_| ()))
            .await
    }
}
