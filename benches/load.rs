//! Load benchmark: signed `POST /api/v1/send` and gRPC `SendMessage` over loopback against a
//! real server (SQLite and, when a PostgreSQL URL is given, PostgreSQL), beside a bare axum
//! handler measured in the same run as the ceiling. Prints accepted messages/s and p50/p99.
//! On PostgreSQL it also runs `pgbench` (one one-row INSERT per transaction, as many clients
//! as connections) on the same server as the reference, and three nodes on the one database:
//! their total rate, and a monthly quota spent through all three (it must hold exactly).
//!
//!   cargo bench --bench load -- [--seconds 10] [--connections 32]
//!   (PostgreSQL: WAGATE_BENCH_DATABASE_URL or WAGATE_TEST_DATABASE_URL, e.g.
//!    postgres://postgres@127.0.0.1:5432/postgres — a scratch database is created and dropped)
//!
//! Everything runs on loopback, bounded by --seconds per scenario, and stops by itself.

// A benchmark, not product code: a panic is its failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ScratchPg, flag};
use diesel::{Connection, RunQueryDsl};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use wagate::app::{LaunchConfig, launch};
use wagate::client;
use wagate::crypto::MasterKey;
use wagate::domain::Settings;
use wagate::domain::admin::{Admin, NewProject};
use wagate::proto::v1::messaging_service_client::MessagingServiceClient;
use wagate::proto::v1::{MessageType, SendMessageRequest};
use wagate::storage::{Db, DbConn};

struct Opts {
    seconds: u64,
    connections: usize,
}

fn opts() -> Opts {
    Opts {
        seconds: flag("--seconds", 10).clamp(1, 120),
        connections: flag("--connections", 32).clamp(1, 1024) as usize,
    }
}

struct Stats {
    ok: u64,
    errors: u64,
    /// Answers of 500 and above (among `errors`).
    server_errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Stats {
    fn print(&self, name: &str) -> f64 {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let rate = self.ok as f64 / self.elapsed.as_secs_f64();
        println!(
            "{name:<28} {rate:>10.0} msg/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ok {:>8}   errors {}",
            pct(0.50) as f64 / 1000.0,
            pct(0.99) as f64 / 1000.0,
            self.ok,
            self.errors
        );
        rate
    }
}

/// Drives `connections` HTTP/1.1 keep-alive connections, each sending `make()`'s request in a loop.
async fn http_load(
    addrs: &[std::net::SocketAddr],
    o: &Opts,
    make: Arc<dyn Fn() -> hyper::Request<Full<Bytes>> + Send + Sync>,
    expect: u16,
) -> Stats {
    http_load_from(addrs, o, make, expect, Duration::from_millis(500)).await
}

/// [`http_load`], counting answers only after `warmup`.
async fn http_load_from(
    addrs: &[std::net::SocketAddr],
    o: &Opts,
    make: Arc<dyn Fn() -> hyper::Request<Full<Bytes>> + Send + Sync>,
    expect: u16,
    warmup: Duration,
) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..o.connections {
        let stop = stop.clone();
        let make = make.clone();
        let addr = addrs[i % addrs.len()];
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util_io(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
            let mut server_errors = 0u64;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let resp = match send.send_request(make()).await {
                    Ok(r) => r,
                    Err(_) => break,
                };
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                if start.elapsed() < warmup {
                    continue;
                }
                if status == expect {
                    ok += 1;
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                    server_errors += u64::from(status >= 500);
                }
            }
            (ok, errors, server_errors, lat)
        }));
    }
    tokio::time::sleep(warmup).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut s = Stats {
        ok: 0,
        errors: 0,
        server_errors: 0,
        elapsed,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, server_errors, lat) = t.await.expect("load task");
        s.ok += ok;
        s.errors += errors;
        s.server_errors += server_errors;
        s.latencies_us.extend(lat);
    }
    s
}

/// tokio TcpStream → hyper's IO traits.
fn hyper_util_io(stream: TcpStream) -> hyper_util::rt::TokioIo<TcpStream> {
    hyper_util::rt::TokioIo::new(stream)
}

const BODY: &str = r#"{"recipient":"6281234567890","type":"text","message":"Hello from RK Connect","payload":{"order_id":42}}"#;

/// The ceiling: an axum handler that parses the same JSON and answers the same envelope.
async fn bare_axum() -> std::net::SocketAddr {
    use axum::routing::post;
    async fn handler(body: Bytes) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let _ = v.get("recipient");
        (
            axum::http::StatusCode::CREATED,
            axum::Json(
                serde_json::json!({"success": true, "data": {"id": uuid::Uuid::now_v7().to_string(), "status": "queued", "device": "RK-0001"}, "meta": {"server_id": "bare"}}),
            ),
        )
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/api/v1/send", post(handler));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A project's credentials and the device its requests send from.
struct Creds {
    project_id: String,
    api_key: String,
    api_secret: String,
    device: String,
}

/// A gateway node on `url` (every node of a run shares `key`, as a cluster's nodes do).
async fn start_node(url: &str, key: &MasterKey, node: &str) -> wagate::app::Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    launch(
        LaunchConfig {
            connector: None,
            database_url: url.to_owned(),
            master_key: key.clone(),
            settings: Settings {
                node_id: node.into(),
                ..Settings::default()
            },
            db_pool_size: 8,
            writer: None,
        },
        listener,
    )
    .await
    .expect("gateway starts")
}

/// A project with these limits and one device.
async fn project(url: &str, key: &MasterKey, per_minute: i64, monthly: i64) -> Creds {
    let admin = Admin::new(Db::open(url, 2).unwrap(), key.clone());
    let p = admin
        .create_project(NewProject {
            name: "bench".into(),
            rate_limit_per_minute: per_minute,
            monthly_quota: monthly,
            max_sessions: 1,
        })
        .await
        .unwrap();
    let d = admin
        .create_device(&p.project_id, None, None)
        .await
        .unwrap();
    Creds {
        project_id: p.project_id,
        api_key: p.api_key,
        api_secret: p.api_secret,
        device: d.device_code,
    }
}

const UNLIMITED: i64 = i64::MAX / 4;

fn rest_request(t: &Creds) -> Arc<dyn Fn() -> hyper::Request<Full<Bytes>> + Send + Sync> {
    let ts = client::unix_now();
    let sig = client::rk_signature(&t.api_key, &t.api_secret, &ts, BODY.as_bytes());
    let (key, device) = (t.api_key.clone(), t.device.clone());
    Arc::new(move || {
        hyper::Request::post("/api/v1/send")
            .header("host", "wagate")
            .header("content-type", "application/json")
            .header("x-api-key", &key)
            .header("x-device-code", &device)
            .header("x-timestamp", &ts)
            .header("x-signature", &sig)
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap()
    })
}

async fn grpc_load(addr: std::net::SocketAddr, t: &Creds, o: &Opts) -> Stats {
    const PATH: &str = "/wagate.v1.MessagingService/SendMessage";
    let msg = SendMessageRequest {
        recipient: "6281234567890".into(),
        r#type: MessageType::Text as i32,
        message: "Hello from RK Connect".into(),
        ..Default::default()
    };
    let ts = client::unix_now();
    let sig = client::grpc_signature(&t.api_key, &t.api_secret, &ts, PATH, &msg.encode_to_vec());
    // A few HTTP/2 connections, many concurrent streams on each.
    let mut channels = Vec::new();
    for _ in 0..4 {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
        channels.push(endpoint.connect().await.expect("gRPC connect"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_millis(500);
    let mut tasks = Vec::new();
    for i in 0..o.connections {
        let mut c = MessagingServiceClient::new(channels[i % channels.len()].clone());
        let (msg, ts, sig, key, dev, stop) = (
            msg.clone(),
            ts.clone(),
            sig.clone(),
            t.api_key.clone(),
            t.device.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let mut req = tonic::Request::new(msg.clone());
                let md = req.metadata_mut();
                md.insert("x-api-key", key.parse().unwrap());
                md.insert("x-timestamp", ts.parse().unwrap());
                md.insert("x-signature", sig.parse().unwrap());
                md.insert("x-device-code", dev.parse().unwrap());
                let t0 = Instant::now();
                let r = c.send_message(req).await;
                if start.elapsed() < warmup {
                    continue;
                }
                match r {
                    Ok(_) => {
                        ok += 1;
                        lat.push(t0.elapsed().as_micros() as u32);
                    }
                    Err(_) => errors += 1,
                }
            }
            (ok, errors, lat)
        }));
    }
    tokio::time::sleep(warmup).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut s = Stats {
        ok: 0,
        errors: 0,
        server_errors: 0,
        elapsed,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await.unwrap();
        s.ok += ok;
        s.errors += errors;
        s.latencies_us.extend(lat);
    }
    s
}

/// REST and gRPC against one node; the REST and gRPC rates.
async fn run_backend(label: &str, url: &str, o: &Opts) -> (f64, f64) {
    let key = MasterKey::generate();
    let server = start_node(url, &key, "bench").await;
    let creds = project(url, &key, UNLIMITED, UNLIMITED).await;
    let rest = http_load(&[server.addr], o, rest_request(&creds), 201)
        .await
        .print(&format!("REST /api/v1/send {label}"));
    let grpc = grpc_load(server.addr, &creds, o)
        .await
        .print(&format!("gRPC SendMessage {label}"));
    server.shutdown().await;
    (rest, grpc)
}

/// Three nodes on one PostgreSQL database, the load spread over them: the total rate, then
/// a project with a monthly quota hammered through all three until it is spent, to show the
/// limit holds exactly across nodes (every 201 stored, none past the quota).
async fn run_three_nodes(url: &str, o: &Opts) {
    let key = MasterKey::generate();
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(start_node(url, &key, &format!("n{n}")).await);
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let creds = project(url, &key, UNLIMITED, UNLIMITED).await;
    let rate = http_load(&addrs, o, rest_request(&creds), 201)
        .await
        .print("REST /api/v1/send pg 3 nodes");

    // A quota the three nodes spend in about half of the 3 s window, so the rest of it
    // hammers a spent quota.
    let quota = ((rate * 1.5) as i64).clamp(500, 20_000);
    let capped = project(url, &key, UNLIMITED, quota).await;
    let spend = Opts {
        seconds: 3,
        connections: o.connections,
    };
    let s = http_load_from(&addrs, &spend, rest_request(&capped), 201, Duration::ZERO).await;
    let db = Db::open(url, 1).unwrap();
    let pid = capped.project_id.clone();
    let stored: i64 = db
        .run(move |c| {
            let DbConn::Postgres(pg) = c else {
                unreachable!()
            };
            #[derive(diesel::QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            Ok(
                diesel::sql_query("SELECT count(*) AS n FROM messages WHERE project_id = $1")
                    .bind::<diesel::sql_types::Text, _>(pid)
                    .get_result::<N>(pg)
                    .unwrap()
                    .n,
            )
        })
        .await
        .unwrap();
    println!(
        "quota {quota} spent through 3 nodes: {} answered 201, {stored} stored, {} refused ({} of them 5xx){}",
        s.ok,
        s.errors,
        s.server_errors,
        if s.ok as i64 == quota && stored == quota {
            "  exact"
        } else {
            "  NOT EXACT"
        }
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// The reference for PostgreSQL: what `pgbench` reaches on the same server with one
/// one-row INSERT per transaction from `clients` clients (`None` when pgbench is missing).
fn pgbench(url: &str, clients: usize, seconds: u64) -> Option<f64> {
    let mut c = diesel::PgConnection::establish(url).unwrap();
    diesel::sql_query(
        "CREATE TABLE IF NOT EXISTS bench_one_row (id BIGSERIAL PRIMARY KEY, \
         recipient TEXT NOT NULL, body TEXT NOT NULL, created_at BIGINT NOT NULL)",
    )
    .execute(&mut c)
    .unwrap();
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "INSERT INTO bench_one_row (recipient, body, created_at) \
         VALUES ('6281234567890', 'Hello from RK Connect', 1);\n",
    )
    .unwrap();
    let out = std::process::Command::new("pgbench")
        .args([
            "-n",
            "-j",
            "1",
            "-c",
            &clients.to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(script.path())
        .arg(url)
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            println!(
                "pgbench failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            println!("pgbench skipped ({e}): install PostgreSQL's client tools for the reference");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())?;
    println!(
        "{:<28} {tps:>10.0} tx/s   (pgbench, {clients} clients, one-row INSERT per transaction)",
        "pgbench reference"
    );
    Some(tps)
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "wagate load benchmark: {} s per scenario, {} connections, {} CPUs, loopback, generator in-process",
            o.seconds,
            o.connections,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        let bare = bare_axum().await;
        let ceiling = http_load(&[bare], &o, Arc::new(move || {
            hyper::Request::post("/api/v1/send")
                .header("host", "bench")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                .unwrap()
        }), 201)
        .await
        .print("bare axum handler (ceiling)");

        let dir = tempfile::tempdir().unwrap();
        let sqlite = dir.path().join("bench.db").to_string_lossy().into_owned();
        let (rest, grpc) = run_backend("sqlite", &sqlite, &o).await;
        println!(
            "SQLite: REST {:.0}% and gRPC {:.0}% of the bare handler (target >= 35%)",
            100.0 * rest / ceiling,
            100.0 * grpc / ceiling
        );

        if let Some(pg) = ScratchPg::from_env(&["WAGATE_BENCH_DATABASE_URL", "WAGATE_TEST_DATABASE_URL"]) {
            let (url, seconds, clients) = (pg.url.clone(), o.seconds, o.connections);
            let reference = tokio::task::spawn_blocking(move || pgbench(&url, clients, seconds))
                .await
                .unwrap();
            let (rest, grpc) = run_backend("postgres", &pg.url, &o).await;
            if let Some(r) = reference {
                println!(
                    "PostgreSQL: REST {:.2}x and gRPC {:.2}x the pgbench one-row-insert rate (targets: >= 1x and >= 12000/s)",
                    rest / r,
                    grpc / r
                );
            }
            run_three_nodes(&pg.url, &o).await;
        }
    });
}
