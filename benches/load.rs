//! Load benchmark: signed `POST /api/v1/send` and gRPC `SendMessage` over loopback against a
//! real server (SQLite and, when a PostgreSQL URL is given, PostgreSQL), beside a bare axum
//! handler measured in the same run as the ceiling. Prints accepted messages/s and p50/p99.
//!
//!   cargo bench --bench load -- [--seconds 10] [--connections 64]
//!   (PostgreSQL: WAGATE_BENCH_DATABASE_URL or WAGATE_TEST_DATABASE_URL, e.g.
//!    postgres://postgres@127.0.0.1:5432/postgres — a scratch database is created and dropped)
//!
//! Everything runs on loopback, bounded by --seconds per scenario, and stops by itself.

// A benchmark, not product code: a panic is its failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ScratchPg, flag};
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
use wagate::storage::Db;

struct Opts {
    seconds: u64,
    connections: usize,
}

fn opts() -> Opts {
    Opts {
        seconds: flag("--seconds", 10).clamp(1, 120),
        connections: flag("--connections", 64).clamp(1, 1024) as usize,
    }
}

struct Stats {
    ok: u64,
    errors: u64,
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
    addr: std::net::SocketAddr,
    o: &Opts,
    make: Arc<dyn Fn() -> hyper::Request<Full<Bytes>> + Send + Sync>,
    expect: u16,
) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_millis(500);
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let stop = stop.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util_io(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::with_capacity(1 << 16));
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
        elapsed,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await.expect("load task");
        s.ok += ok;
        s.errors += errors;
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

struct Target {
    addr: std::net::SocketAddr,
    api_key: String,
    api_secret: String,
    device: String,
}

async fn start_gateway(url: &str) -> (wagate::app::Server, Target) {
    let key = MasterKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = launch(
        LaunchConfig {
            connector: None,
            database_url: url.to_owned(),
            master_key: key.clone(),
            settings: Settings {
                node_id: "bench".into(),
                ..Settings::default()
            },
            db_pool_size: 8,
            writer: None,
        },
        listener,
    )
    .await
    .expect("gateway starts");
    let admin = Admin::new(Db::open(url, 2).unwrap(), key);
    let p = admin
        .create_project(NewProject {
            name: "bench".into(),
            rate_limit_per_minute: i64::MAX / 4,
            monthly_quota: i64::MAX / 4,
            max_sessions: 1,
        })
        .await
        .unwrap();
    let d = admin
        .create_device(&p.project_id, Some("RK-BENCH".into()), None)
        .await
        .unwrap();
    let target = Target {
        addr: server.addr,
        api_key: p.api_key,
        api_secret: p.api_secret,
        device: d.device_code,
    };
    (server, target)
}

fn rest_request(t: &Target) -> Arc<dyn Fn() -> hyper::Request<Full<Bytes>> + Send + Sync> {
    let ts = client::unix_now();
    let sig = client::rk_signature(&t.api_key, &t.api_secret, &ts, BODY.as_bytes());
    let (key, device, host) = (t.api_key.clone(), t.device.clone(), t.addr.to_string());
    Arc::new(move || {
        hyper::Request::post("/api/v1/send")
            .header("host", &host)
            .header("content-type", "application/json")
            .header("x-api-key", &key)
            .header("x-device-code", &device)
            .header("x-timestamp", &ts)
            .header("x-signature", &sig)
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap()
    })
}

async fn grpc_load(t: &Target, o: &Opts) -> Stats {
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
        let endpoint =
            tonic::transport::Channel::from_shared(format!("http://{}", t.addr)).unwrap();
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

async fn run_backend(label: &str, url: &str, o: &Opts) -> f64 {
    let (server, target) = start_gateway(url).await;
    let rest = http_load(target.addr, o, rest_request(&target), 201)
        .await
        .print(&format!("REST /api/v1/send {label}"));
    grpc_load(&target, o)
        .await
        .print(&format!("gRPC SendMessage {label}"));
    server.shutdown().await;
    rest
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
        let ceiling = http_load(bare, &o, Arc::new(move || {
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
        let rest_sqlite = run_backend("sqlite", &sqlite, &o).await;
        println!(
            "REST on SQLite: {:.0} msg/s = {:.0}% of the bare handler (targets: >= 10000 msg/s and >= 25%)",
            rest_sqlite,
            100.0 * rest_sqlite / ceiling
        );

        if let Some(pg) = ScratchPg::from_env(&["WAGATE_BENCH_DATABASE_URL", "WAGATE_TEST_DATABASE_URL"]) {
            run_backend("postgres", &pg.url, &o).await;
        }
    });
}
