//! Configuration of `wagate serve`: flags, with environment variables of the same meaning.

use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::{KeySource, MasterKey};
use crate::domain::Settings;
use crate::error::{Error, Result};
use crate::storage::{Backend, parse_url};

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// SQLite file path (or sqlite://path), or a postgres:// URL.
    #[arg(long, env = "WAGATE_DATABASE_URL", default_value = "wagate.db")]
    pub database_url: String,
    /// 32-byte key (hex or base64) that encrypts secrets at rest. With SQLite and no key, one
    /// is generated into `<database>.key` (mode 0600). Required with PostgreSQL.
    #[arg(long, env = "WAGATE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
}

impl DbArgs {
    pub fn resolve_master_key(&self) -> Result<(MasterKey, KeySource)> {
        if let Some(k) = self.master_key.as_deref().filter(|k| !k.is_empty()) {
            return Ok((MasterKey::parse(k)?, KeySource::Environment));
        }
        let url = parse_url(&self.database_url);
        match (url.backend, url.target) {
            (Backend::Sqlite, path) if path == ":memory:" || path.is_empty() => Ok((
                MasterKey::generate(),
                KeySource::GeneratedFile("(in memory)".into()),
            )),
            (Backend::Sqlite, path) => {
                MasterKey::load_or_create(std::path::Path::new(&format!("{path}.key")))
            }
            (Backend::Postgres, _) => Err(Error::Internal(
                "WAGATE_MASTER_KEY is required with PostgreSQL (every node must use the same key)"
                    .into(),
            )),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address for gRPC, grpc-web and REST (one port).
    #[arg(long, env = "WAGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// This node's name, answered as `meta.server_id` (default: the host name).
    #[arg(long, env = "WAGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// Where the other nodes of a cluster reach this one (default: from --listen).
    #[arg(long, env = "WAGATE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Sessions this node runs at most (default: unlimited).
    #[arg(long, env = "WAGATE_MAX_SESSIONS")]
    pub max_sessions: Option<u32>,
    /// A session's lease, in seconds: another node takes a session over this long after its
    /// owner stopped renewing.
    #[arg(long, env = "WAGATE_LEASE_TTL_SECS", default_value_t = 15)]
    pub lease_ttl_secs: u64,
    /// How often a node renews its leases, in seconds (at most half the TTL).
    #[arg(long, env = "WAGATE_LEASE_RENEW_SECS", default_value_t = 5)]
    pub lease_renew_secs: u64,
    /// Sessions a node hands over per minute to even out the spread across nodes.
    #[arg(long, env = "WAGATE_REBALANCE_PER_MINUTE", default_value_t = 30)]
    pub rebalance_per_minute: u32,
    /// Operator token of the cluster endpoints (`Authorization: Bearer`); off without it.
    #[arg(long, env = "WAGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Allowed clock difference for X-TIMESTAMP and Date, in seconds.
    #[arg(long, env = "WAGATE_SIGNATURE_WINDOW_SECS", default_value_t = 300)]
    pub signature_window_secs: u64,
    /// How long an X-REQUEST-ID is remembered, in hours.
    #[arg(long, env = "WAGATE_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u64,
    /// Queued messages not sent within this many hours fail with MESSAGE_EXPIRED.
    #[arg(long, env = "WAGATE_MESSAGE_TTL_HOURS", default_value_t = 168)]
    pub message_ttl_hours: u64,
    /// Send attempts per message before it fails.
    #[arg(long, env = "WAGATE_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: i32,
    /// Connect sessions to this loopback WhatsApp simulator (wasim) instead of WhatsApp.
    /// Only in builds with the `simulator` feature.
    #[cfg(feature = "simulator")]
    #[arg(long, env = "WAGATE_WHATSAPP_URL")]
    pub whatsapp_url: Option<String>,
    /// Country code prefixed to 10-digit phone numbers on the SAK endpoints.
    #[arg(long, env = "WAGATE_DEFAULT_COUNTRY_CODE", default_value = "91")]
    pub default_country_code: String,
    /// Database connections for reads (writes use dedicated writer connections).
    #[arg(long, env = "WAGATE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Allow webhook receivers on loopback, private and link-local addresses.
    #[arg(long, env = "WAGATE_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Per webhook request: connect, send and answer, in seconds.
    #[arg(long, env = "WAGATE_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// Requests in flight to one webhook from this node (one per session lane).
    #[arg(long, env = "WAGATE_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,
    /// First retry delay of a failed delivery, in milliseconds (later ones grow from it).
    #[arg(long, env = "WAGATE_WEBHOOK_RETRY_BASE_MS", default_value_t = 5000)]
    pub webhook_retry_base_ms: u64,
    /// A delivery still failing this many hours after its event goes to the dead letter.
    #[arg(long, env = "WAGATE_WEBHOOK_RETRY_HORIZON_HOURS", default_value_t = 24)]
    pub webhook_retry_horizon_hours: u64,
    /// After a secret rotation, hours the previous secret still signs.
    #[arg(
        long,
        env = "WAGATE_WEBHOOK_SECRET_OVERLAP_HOURS",
        default_value_t = 24
    )]
    pub webhook_secret_overlap_hours: u64,
    /// Hours events and finished deliveries are kept (the replay window).
    #[arg(long, env = "WAGATE_EVENT_RETENTION_HOURS", default_value_t = 168)]
    pub event_retention_hours: u64,
    /// Hours media files (sent and received) are kept; 0 keeps them forever. A message
    /// still waiting to be sent keeps its file.
    #[arg(long, env = "WAGATE_MEDIA_RETENTION_HOURS", default_value_t = 720)]
    pub media_retention_hours: u64,
    /// Connections open at once (REST, gRPC, grpc-web); more wait in the listen backlog.
    #[arg(long, env = "WAGATE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds a new connection may stay silent before it is closed.
    #[arg(long, env = "WAGATE_FIRST_BYTE_TIMEOUT_SECS", default_value_t = 10)]
    pub first_byte_timeout_secs: u64,
    /// Seconds a request body may take to arrive whole (then 408 REQUEST_TIMEOUT).
    #[arg(long, env = "WAGATE_BODY_TIMEOUT_SECS", default_value_t = 60)]
    pub body_timeout_secs: u64,
    /// MiB of large request bodies (over 64 KiB) in transit at once, all requests together.
    #[arg(long, env = "WAGATE_BODY_BUDGET_MIB", default_value_t = 256)]
    pub body_budget_mib: usize,
    /// Password hashes (register, login) computed at once; default the number of cores.
    #[arg(long, env = "WAGATE_PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<usize>,
    /// Require `Authorization: Bearer <token>` on /metrics.
    #[arg(long, env = "WAGATE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serve /metrics only on this address (e.g. 127.0.0.1:9090), not on --listen.
    #[arg(long, env = "WAGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose X-Forwarded-For names the
    /// client for the per-IP limits; without it the TCP peer is the client.
    #[arg(long, env = "WAGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::transport::limits::IpNet>,
}

impl ServeArgs {
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }

    /// Where sessions connect: WhatsApp, or (simulator builds) the given wasim server.
    pub fn connector(&self) -> Result<Option<crate::sessions::Connector>> {
        #[cfg(feature = "simulator")]
        if let Some(url) = &self.whatsapp_url {
            let http = wasim::client::SimHttpClient::for_ws_url(url)
                .map_err(|e| Error::Internal(format!("--whatsapp-url: {e}")))?;
            return Ok(Some(crate::sessions::Connector {
                transport: std::sync::Arc::new(wasim::client::transport_factory(url)),
                http: std::sync::Arc::new(http),
                version: Some(wasim::client::CLIENT_VERSION),
            }));
        }
        Ok(None)
    }

    pub fn settings(&self) -> Settings {
        Settings {
            node_id: self.node_id(),
            signature_window: Duration::from_secs(self.signature_window_secs),
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_hours * 3600),
            message_ttl: Duration::from_secs(self.message_ttl_hours * 3600),
            max_attempts: self.max_attempts.max(1),
            default_country_code: self
                .default_country_code
                .chars()
                .filter(char::is_ascii_digit)
                .collect(),
            webhooks: crate::webhooks::Settings {
                allow_private: self.webhook_allow_private,
                timeout: Duration::from_secs(self.webhook_timeout_secs.max(1)),
                per_webhook_concurrency: self.webhook_concurrency.max(1),
                retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(10)),
                retry_horizon: Duration::from_secs(self.webhook_retry_horizon_hours * 3600),
                secret_overlap: Duration::from_secs(self.webhook_secret_overlap_hours * 3600),
                retention: Duration::from_secs(self.event_retention_hours.max(1) * 3600),
                ..crate::webhooks::Settings::default()
            },
            media_retention: (self.media_retention_hours > 0)
                .then(|| Duration::from_secs(self.media_retention_hours * 3600)),
            hashing: {
                let mut h = crate::domain::accounts::HashingSettings::default();
                if let Some(n) = self.password_hash_concurrency.filter(|n| *n > 0) {
                    h.concurrency = n;
                    h.queue = 4 * n;
                }
                h
            },
            http: crate::transport::limits::HttpSettings {
                max_connections: self.max_connections.max(1),
                first_byte_timeout: Duration::from_secs(self.first_byte_timeout_secs.max(1)),
                body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
                body_budget_bytes: self.body_budget_mib.max(16) * 1024 * 1024,
                metrics_token: self.metrics_token.clone().filter(|t| !t.is_empty()),
                metrics_listen: self.metrics_listen,
                trusted_proxies: self.trusted_proxies.clone(),
            },
            cluster: crate::cluster::ClusterSettings {
                lease_ttl: Duration::from_secs(self.lease_ttl_secs.max(2)),
                lease_renew: Duration::from_secs(self.lease_renew_secs.max(1)),
                advertise_url: self.advertise_url.clone().filter(|u| !u.is_empty()),
                max_sessions: self.max_sessions.map(i64::from),
                moves_per_minute: self.rebalance_per_minute,
                ..crate::cluster::ClusterSettings::default()
            },
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            ..Settings::default()
        }
    }
}
