//! Assembles and runs the server: storage, service layer, REST + gRPC + grpc-web on one
//! port, background upkeep, graceful shutdown. Tests and benchmarks call [`launch`] with a
//! listener on port 0.

use axum::extract::Request;
use axum::http::{HeaderName, Method, header};
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tower_http::cors::{Any, CorsLayer};

use crate::cluster::peers::{NodeKey, Peers};
use crate::cluster::{ClusterSessions, Membership};
use crate::crypto::MasterKey;
use crate::domain::broadcasts::pacing::Policy;
use crate::domain::{Gateway, Settings};
use crate::error::{Error, Result};
use crate::sessions::fence::LeaseClock;
use crate::sessions::{Connector, DbStores, SessionClient, SessionManager};
use crate::storage::accept::{AcceptWriter, WriterConfig};
use crate::storage::cluster::NodeRecord;
use crate::storage::{Db, messages};
use crate::transport::error::Refusal;
use crate::transport::rest::envelope::ApiError;
use crate::transport::{grpc, limits, metrics, rest};
use std::sync::Arc;

pub struct LaunchConfig {
    /// Where sessions connect; WhatsApp's servers when `None`.
    pub connector: Option<crate::sessions::Connector>,
    pub database_url: String,
    pub master_key: MasterKey,
    pub settings: Settings,
    pub db_pool_size: u32,
    /// Defaults per backend when `None`.
    pub writer: Option<WriterConfig>,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    /// This node in the cluster: its sessions are handed over last at shutdown.
    member: Arc<Membership>,
    /// SQLite: the file lock that keeps a second process off the database.
    _single_node: Option<std::fs::File>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    upkeep: JoinHandle<()>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = self.upkeep.await;
        self.member.leave().await;
    }

    /// Runs until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down: draining in-flight requests");
        self.shutdown().await;
    }
}

fn cors() -> CorsLayer {
    let h = |s: &'static str| HeaderName::from_static(s);
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::DATE,
            h("x-grpc-web"),
            h("x-user-agent"),
            h("grpc-timeout"),
            h("x-api-key"),
            h("x-timestamp"),
            h("x-signature"),
            h("x-device-code"),
            h("x-request-id"),
            h("x-session-id"),
            h("digest"),
        ])
        .expose_headers([
            h("grpc-status"),
            h("grpc-message"),
            h("grpc-status-details-bin"),
            h("x-error-code"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(3600))
}

enum GrpcKind {
    Native,
    Web,
    /// `application/grpc` over HTTP/1.1: tonic would answer it with a bare protocol error.
    NativeOverHttp1,
}

fn grpc_kind(req: &Request) -> Option<GrpcKind> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())?;
    if ct.starts_with("application/grpc-web") {
        Some(GrpcKind::Web)
    } else if ct.starts_with("application/grpc") {
        if req.version() < axum::http::Version::HTTP_2 {
            Some(GrpcKind::NativeOverHttp1)
        } else {
            Some(GrpcKind::Native)
        }
    } else {
        None
    }
}

pub async fn launch(cfg: LaunchConfig, listener: TcpListener) -> Result<Server> {
    metrics::install();
    cfg.settings.cluster.validate()?;
    let url = crate::storage::parse_url(&cfg.database_url);
    let single_node = match url.backend {
        crate::storage::Backend::Sqlite => crate::cluster::single_node_lock(&url.target)?,
        crate::storage::Backend::Postgres => None,
    };
    let db = Db::open(&cfg.database_url, cfg.db_pool_size)?;
    let applied = db.migrate()?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    // Before any session starts: key records written before sealing get sealed.
    let key = cfg.master_key.clone();
    let sealed = db
        .run(move |c| crate::storage::devices::seal_legacy_rows(c, &key))
        .await?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            "sealed plain WhatsApp key records with the master key"
        );
    }
    let writer_cfg = cfg
        .writer
        .unwrap_or_else(|| WriterConfig::for_backend(db.backend()));
    let writer = AcceptWriter::start(&db, &writer_cfg)?;
    let node_id = cfg.settings.node_id.clone();
    let clock = Arc::new(LeaseClock::new());
    let sessions = SessionManager::new(
        db.clone(),
        node_id.clone(),
        cfg.connector.unwrap_or_else(Connector::whatsapp),
        Arc::new(DbStores::new(db.clone(), cfg.master_key.clone())),
        clock.clone(),
        Policy::defaults(&cfg.settings.broadcasts),
    );
    let peers = Peers::new(
        node_id.clone(),
        NodeKey::from_master(&cfg.master_key),
        db.clone(),
    );
    let member = Membership::new(
        db.clone(),
        sessions,
        NodeRecord {
            id: node_id.clone(),
            instance: uuid::Uuid::new_v4().to_string(),
            advertise_url: cfg
                .settings
                .cluster
                .advertise_url_for(listener.local_addr().map_err(Error::internal)?),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            max_sessions: cfg.settings.cluster.max_sessions,
        },
        cfg.settings.cluster.clone(),
        clock,
        peers.clone(),
    );
    member.join().await?;
    let dispatcher = crate::webhooks::dispatcher::Dispatcher::new(
        db.clone(),
        cfg.master_key.clone(),
        cfg.settings.webhooks.clone(),
        cfg.settings.node_id.clone(),
    )?;
    let gw = Gateway::new(
        db,
        cfg.master_key,
        cfg.settings,
        writer,
        SessionClient::new(ClusterSessions::new(member.clone())),
    );

    let interrupted = gw.fail_interrupted_imports().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "contact list imports interrupted by the last stop were failed"
        );
    }
    let (grpc_router, health) = grpc::router(gw.clone(), member.clone()).await?;
    let http = gw.settings().http.clone();
    let app = rest::router(gw.clone())
        .fallback(move |req: Request| {
            let grpc_router = grpc_router.clone();
            async move {
                match grpc_kind(&req) {
                    Some(GrpcKind::Web) | Some(GrpcKind::Native) => {
                        grpc_router.oneshot(req).await.into_response()
                    }
                    Some(GrpcKind::NativeOverHttp1) => ApiError::from(Refusal::InvalidParameter(
                        "gRPC needs HTTP/2; over HTTP/1.1 use grpc-web (application/grpc-web)"
                            .into(),
                    ))
                    .into_response(),
                    None => ApiError::from(Refusal::RouteNotFound).into_response(),
                }
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            limits::BodyGuard::new(&http),
            limits::guard_body,
        ))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(cors());

    let addr = listener.local_addr().map_err(Error::internal)?;
    let (stop, mut stopped) = watch::channel(false);
    if let Some(metrics_addr) = http.metrics_listen {
        let metrics_listener = TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| Error::Internal(format!("cannot listen on {metrics_addr}: {e}")))?;
        let router = axum::Router::new()
            .route("/metrics", axum::routing::get(rest::metrics_endpoint))
            .with_state(gw.clone());
        let mut metrics_stop = stopped.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = metrics_stop.changed().await;
            };
            if let Err(e) = axum::serve(metrics_listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
        tracing::info!(%metrics_addr, "metrics on their own listener");
    }
    let incoming = limits::incoming(listener, &http);
    let mut stop_rx = stopped.clone();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_routes(tonic::service::Routes::from(app));
    let task = tokio::spawn(async move {
        server
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.changed().await;
                health.set_not_serving::<crate::proto::v1::messaging_service_server::MessagingServiceServer<grpc::messaging::MessagingApi>>().await;
            })
            .await
    });
    let broadcasts_gw = gw.clone();
    let broadcasts_stop = stopped.clone();
    tokio::spawn(async move { broadcasts_gw.run_broadcasts(broadcasts_stop).await });
    let upkeep_gw = gw.clone();
    let dispatch_stop = stopped.clone();
    let janitor_stop = stopped.clone();
    let (member_stop, nudge_stop, due_stop) = (stopped.clone(), stopped.clone(), stopped.clone());
    let upkeep = tokio::spawn(async move {
        let gauges = async {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = every.tick() => update_gauges(&upkeep_gw).await,
                }
            }
        };
        tokio::join!(gauges, upkeep_gw.run_janitor(janitor_stop));
    });
    tokio::spawn(dispatcher.run(dispatch_stop));
    // Awaited (claims, then spawns): once `launch` returns, no stored state from before the
    // restart is reported as current for the sessions this node took.
    if let Err(e) = member.balance_now().await {
        tracing::error!(error = %e, "cannot claim sessions");
    }
    tokio::spawn(member.clone().run(member_stop));
    tokio::spawn(peers.run_nudges(nudge_stop));
    tokio::spawn(member.local().clone().run_due_scan(due_stop));
    tracing::info!(%addr, node = gw.node_id(), backend = ?gw.db().backend(), "wagate listening (REST, gRPC, grpc-web)");
    Ok(Server {
        addr,
        gateway: gw,
        member,
        _single_node: single_node,
        stop,
        task,
        upkeep,
    })
}

async fn update_gauges(gw: &Gateway) {
    match gw.db().run(messages::queued_count).await {
        Ok(n) => ::metrics::gauge!("wagate_queue_depth").set(n as f64),
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable"),
    }
    ::metrics::gauge!("wagate_accept_backlog").set(gw.accept_backlog() as f64);
    if let Ok(n) = gw.db().run(crate::storage::webhooks::open_count).await {
        ::metrics::gauge!("wagate_webhook_backlog").set(n as f64);
    }
}
