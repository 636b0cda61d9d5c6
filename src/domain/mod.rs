//! The service layer: every operation the gRPC services and the REST shim expose, written
//! once. Transports decode their input, call a method here, and encode the result.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod broadcasts;
pub mod cluster;
pub mod janitor;
pub mod media;
pub mod messaging;
pub mod principal;
pub mod qr;
pub mod sessions;
pub mod text;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use crate::crypto::MasterKey;
use crate::error::Result;
use crate::sessions::SessionClient;
use crate::storage::Db;
use crate::storage::accept::AcceptWriter;

/// Tunables of the service layer (see `config` for their flags and defaults).
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: String,
    pub signature_window: Duration,
    pub idempotency_ttl: Duration,
    pub message_ttl: Duration,
    pub max_attempts: i32,
    pub max_media_bytes: usize,
    pub credential_cache_ttl: Duration,
    /// Prefixed to 10-digit SAK phone numbers (the SAK document's default is India, 91).
    pub default_country_code: String,
    pub webhooks: crate::webhooks::Settings,
    /// Media bytes (sent and received) are dropped this long after they were stored, except
    /// while their message waits to be sent; `None` keeps them forever.
    pub media_retention: Option<Duration>,
    /// How often expiry and retention run.
    pub janitor_interval: Duration,
    /// Password hashing (register, login): how many at once, how many may wait.
    pub hashing: accounts::HashingSettings,
    /// Connection, header and body limits of the HTTP server (REST, gRPC, grpc-web).
    pub http: crate::transport::limits::HttpSettings,
    /// Leases, balancing and where other nodes reach this one.
    pub cluster: crate::cluster::ClusterSettings,
    /// The operator token of the cluster endpoints; they are off without one.
    pub admin_token: Option<String>,
    /// Campaign pacing defaults and the reply window.
    pub broadcasts: broadcasts::campaigns::BroadcastSettings,
    /// When a session is unfit for campaigns (account health).
    pub broadcast_health: broadcasts::health::HealthSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_id: "wagate".into(),
            signature_window: Duration::from_secs(300),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            message_ttl: Duration::from_secs(7 * 24 * 3600),
            max_attempts: 5,
            max_media_bytes: 10 * 1024 * 1024,
            credential_cache_ttl: Duration::from_secs(30),
            default_country_code: "91".into(),
            webhooks: crate::webhooks::Settings::default(),
            media_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            janitor_interval: Duration::from_secs(60),
            hashing: accounts::HashingSettings::default(),
            http: crate::transport::limits::HttpSettings::default(),
            cluster: crate::cluster::ClusterSettings::default(),
            admin_token: None,
            broadcasts: broadcasts::campaigns::BroadcastSettings::default(),
            broadcast_health: broadcasts::health::HealthSettings::default(),
        }
    }
}

/// The gateway's service layer; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    settings: Settings,
    key: MasterKey,
    writer: AcceptWriter,
    auth: auth::AuthCache,
    sessions: SessionClient,
    /// Open event streams on this node (each holds a task and polls the database).
    streams: Arc<tokio::sync::Semaphore>,
    hashing: accounts::PasswordHasherPool,
    /// Signs and checks node-to-node calls; derived once from the master key.
    node_key: crate::cluster::peers::NodeKey,
    /// Wakes this node's broadcast dispatcher (a campaign created or resumed here).
    broadcasts_wake: tokio::sync::Notify,
}

/// Event streams one node serves at once.
const MAX_EVENT_STREAMS: usize = 1024;

impl Gateway {
    pub fn new(
        db: Db,
        key: MasterKey,
        settings: Settings,
        writer: AcceptWriter,
        sessions: SessionClient,
    ) -> Self {
        Gateway {
            inner: Arc::new(Inner {
                auth: auth::AuthCache::new(settings.credential_cache_ttl),
                hashing: accounts::PasswordHasherPool::new(&settings.hashing),
                node_key: crate::cluster::peers::NodeKey::from_master(&key),
                db,
                settings,
                key,
                writer,
                sessions,
                streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
                broadcasts_wake: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn node_id(&self) -> &str {
        &self.inner.settings.node_id
    }

    /// The running sessions, wherever they run.
    pub fn sessions(&self) -> &SessionClient {
        &self.inner.sessions
    }

    /// Ready to serve means the database answers: a pooled connection runs a query on a
    /// migrated table (the depth of the send queue). Nothing else is asked: sessions connect
    /// in the background, and a node with none connected still serves every call.
    pub async fn ready(&self) -> Result<()> {
        self.db()
            .run(crate::storage::messages::queued_count)
            .await
            .map(drop)
    }

    pub(crate) fn node_key(&self) -> &crate::cluster::peers::NodeKey {
        &self.inner.node_key
    }

    pub fn admin(&self) -> admin::Admin {
        admin::Admin::new(self.inner.db.clone(), self.inner.key.clone())
    }

    /// Requests waiting for a message writer (a saturation signal for metrics).
    pub fn accept_backlog(&self) -> usize {
        self.inner.writer.backlog()
    }

    /// What the message writers did (whole-batch retries, isolated batches).
    pub fn accept_stats(&self) -> crate::storage::accept::WriterStats {
        self.inner.writer.stats()
    }
}
