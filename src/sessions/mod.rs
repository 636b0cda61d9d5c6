//! WhatsApp sessions: one whatsapp-rust client per session, each under its own supervisor
//! task, so a failure or panic in one session never touches another.
//!
//! - `control`: [`SessionControl`], what the domain asks of a running session, and
//!   [`SessionClient`], the handle the domain holds (the seam a remote implementation plugs
//!   into).
//! - `local`: [`SessionManager`], the sessions running in this process under leases this
//!   node holds: it starts, stops, hands over and cuts them and answers their state.
//! - `fence`: the self-fence, so a node whose leases may have expired sends WhatsApp nothing.
//! - `supervisor` runs one session: builds the bot on the session's device store, turns its
//!   events into state, inbound messages, acks and receipts, and restarts it with backoff.
//! - `outbound` sends the session's queued messages; `statuses` records what WhatsApp reports
//!   about them (server acks, receipts), several to a transaction.
//! - `inbound` stores received messages before they are acknowledged to WhatsApp.

mod control;
pub use control::{MAX_NUMBERS_PER_QUERY, SessionClient, SessionControl, SessionState, Snapshot};
pub mod fence;
mod local;
pub use local::SessionManager;
use local::{Inner, Slot};
mod inbound;
pub mod lid_cache;
mod outbound;
pub use outbound::wa_message_id;
mod statuses;
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
    /// The store of a session running under `fence`: its writes are fenced by that lease.
    fn open(&self, fence: &crate::storage::cluster::Fence) -> Arc<dyn Backend>;
    /// Forgets everything of a session (after logout or delete).
    async fn wipe(&self, device_id: &str) -> Result<()>;
}

/// Adapter so a shared (`Arc<dyn …>`) HTTP client can be handed to the bot builder.
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
    fn open(&self, fence: &crate::storage::cluster::Fence) -> Arc<dyn Backend> {
        Arc::new(
            crate::storage::devices::DbDeviceStore::new(
                self.db.clone(),
                &self.key,
                fence.device_id.clone(),
            )
            .fenced(fence.clone()),
        )
    }

    async fn wipe(&self, device_id: &str) -> Result<()> {
        let id = device_id.to_owned();
        self.db
            .run(move |c| crate::storage::devices::wipe(c, &id).map(|_| ()))
            .await
    }
}
