//! Webhook delivery benchmark: events recorded the way the product records them (event row and
//! outbox rows in the change's transaction, `storage::events::record`) inside a real gateway,
//! delivered by its dispatcher to a healthy HTTP/1.1 receiver on loopback in the same process.
//! SQLite (temp file) and, when a PostgreSQL URL is given, PostgreSQL.
//!
//! 1. Throughput: `--events` recorded as fast as one generator can, in transactions of
//!    `--batch`, over `--sessions` sessions and one project-wide webhook; deliveries/s is
//!    events / (first commit → last delivery received).
//! 2. Latency: one event per transaction at `--rate`/s for `--seconds`, spread over the
//!    sessions; event-to-webhook latency = receive time − the payload's `occurredAt`.
//!
//!   cargo bench --bench webhooks -- [--sessions 16] [--events 20000] [--batch 100]
//!                                   [--rate 500] [--seconds 10] [--concurrency 16]
//!   (PostgreSQL: WAGATE_BENCH_DATABASE_URL or WAGATE_TEST_DATABASE_URL, e.g.
//!    postgres://postgres@127.0.0.1:5432/postgres — a scratch database is created and dropped)
//!
//! Figures are printed, never asserted. Everything runs on loopback, every wait is bounded,
//! and the process exits non-zero when deliveries are missing at the end.

// A benchmark, not product code: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
mod common;

use common::{ScratchPg, flag};
use diesel::RunQueryDsl;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wagate::app::{LaunchConfig, Server, launch};
use wagate::crypto::MasterKey;
use wagate::domain::Settings;
use wagate::domain::admin::NewProject;
use wagate::events::{Inbound, MESSAGE_RECEIVED, NewEvent, message_received};
use wagate::storage::{Db, now_ms};
use wagate::values::{ProjectId, SessionId};

struct Opts {
    sessions: usize,
    events: u64,
    batch: u64,
    rate: u64,
    seconds: u64,
    concurrency: usize,
}

fn opts() -> Opts {
    Opts {
        sessions: flag("--sessions", 16).clamp(1, 1000) as usize,
        events: flag("--events", 20_000).clamp(1, 1_000_000),
        batch: flag("--batch", 100).clamp(1, 1000),
        rate: flag("--rate", 500).clamp(1, 20_000),
        seconds: flag("--seconds", 10).clamp(1, 120),
        concurrency: flag("--concurrency", 16).clamp(1, 128) as usize,
    }
}

fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What the receiver saw since the last [`Received::reset`].
#[derive(Default)]
struct Received {
    /// webhook-id → times received.
    seen: HashMap<String, u32>,
    duplicates: u64,
    /// Without a webhook-id, with an unreadable body, or whose eventId differs from it.
    malformed: u64,
    /// receive time − occurredAt, first arrival of each event, µs.
    latencies_us: Vec<i64>,
    last: Option<Instant>,
}

impl Received {
    fn reset(&mut self) {
        *self = Received::default();
    }
}

type Rx = Arc<Mutex<Received>>;

#[derive(serde::Deserialize)]
struct Payload {
    #[serde(rename = "eventId")]
    event_id: String,
    #[serde(rename = "occurredAt")]
    occurred_at: String,
}

async fn hook(State(rx): State<Rx>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let (at, now_us) = (Instant::now(), wall_us());
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let occurred_us = serde_json::from_slice::<Payload>(&body)
        .ok()
        .filter(|p| id.as_deref() == Some(p.event_id.as_str()))
        .and_then(|p| chrono::DateTime::parse_from_rfc3339(&p.occurred_at).ok())
        .map(|t| t.timestamp_micros());
    let mut r = rx.lock().unwrap();
    let (Some(id), Some(occurred_us)) = (id, occurred_us) else {
        r.malformed += 1;
        return StatusCode::OK;
    };
    let n = r.seen.entry(id).or_insert(0);
    *n += 1;
    if *n > 1 {
        r.duplicates += 1;
    } else {
        r.latencies_us.push(now_us - occurred_us);
        r.last = Some(at);
    }
    StatusCode::OK
}

/// A healthy receiver: answers 200 at once and records what arrived.
async fn receiver() -> (SocketAddr, Rx) {
    let rx = Rx::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(rx.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// Waits until `n` distinct events arrived, at most `timeout`.
async fn wait_for(rx: &Rx, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if rx.lock().unwrap().seen.len() >= n {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The HTTP part alone: `conns` keep-alive connections posting a stored payload one request
/// at a time each (as the dispatcher's lanes do), for `secs`. Requests/s.
async fn receiver_ceiling(addr: SocketAddr, conns: usize, secs: f64) -> f64 {
    // The dispatcher's own client (keep-alive pool, address guard).
    let client = wagate::webhooks::http::client(&wagate::webhooks::Settings {
        allow_private: true,
        per_webhook_concurrency: conns,
        ..Default::default()
    })
    .unwrap();
    let url = format!("http://{addr}/hook");
    let body = serde_json::json!({"eventId": "ceiling", "occurredAt": "2026-01-01T00:00:00.000Z"})
        .to_string();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let ok = client
                    .post(&url)
                    .expect("private receivers are allowed here")
                    .header("content-type", "application/json")
                    .header("webhook-id", "ceiling")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                n += u64::from(ok);
            }
            n
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap_or(0);
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

struct Bench {
    server: Server,
    project: ProjectId,
    devices: Vec<SessionId>,
}

async fn start(url: &str, o: &Opts, hook_url: &str) -> Bench {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = launch(
        LaunchConfig {
            connector: None,
            database_url: url.to_owned(),
            master_key: MasterKey::generate(),
            settings: Settings {
                node_id: "bench".into(),
                webhooks: wagate::webhooks::Settings {
                    allow_private: true,
                    per_webhook_concurrency: o.concurrency,
                    ..Default::default()
                },
                ..Settings::default()
            },
            db_pool_size: 16,
            writer: None,
        },
        listener,
    )
    .await
    .expect("gateway starts");
    let gw = &server.gateway;
    let admin = gw.admin();
    let p = admin
        .create_project(NewProject {
            name: "bench".into(),
            rate_limit_per_minute: i64::MAX / 4,
            monthly_quota: i64::MAX / 4,
            max_sessions: o.sessions as i64,
        })
        .await
        .expect("project");
    let mut devices = Vec::new();
    for _ in 0..o.sessions {
        let d = admin
            .create_device(&p.project_id, None, None)
            .await
            .expect("session");
        devices.push(SessionId::from(d.device_id));
    }
    let project = ProjectId::from(p.project_id);
    let caller = gw.caller_for_project(&project).await.expect("caller");
    gw.create_webhook(&caller, None, hook_url, &[MESSAGE_RECEIVED.to_owned()])
        .await
        .expect("webhook");
    Bench {
        project,
        devices,
        server,
    }
}

/// A `message.received` as an inbound text message produces it.
fn inbound(i: u64) -> Map<String, Value> {
    let id = format!("3EB0{i:016X}");
    message_received(&Inbound {
        wa_message_id: &id,
        chat_jid: "6281234567890@s.whatsapp.net",
        sender_jid: "6281234567890@s.whatsapp.net",
        sender_phone: Some("6281234567890"),
        sender_lid: Some("123456789012345"),
        push_name: Some("Bench Sender"),
        kind: "text",
        body: Some("Hello from the webhook benchmark, order #42"),
        sent_at_ms: now_ms(),
        media: None,
    })
}

/// Records events `from..from + n` (session `i % sessions`) in one transaction, on the
/// gateway's own `Db` so the dispatcher is woken on commit as in the product.
async fn record(db: &Db, b: &Bench, from: u64, n: u64) -> wagate::error::Result<()> {
    let events: Vec<NewEvent> = (from..from + n)
        .map(|i| NewEvent {
            project_id: b.project.clone(),
            device_id: Some(b.devices[i as usize % b.devices.len()].clone()),
            kind: MESSAGE_RECEIVED,
            fields: inbound(i),
        })
        .collect();
    db.run(move |c| {
        c.transaction(|c| {
            for e in events {
                wagate::storage::events::record(c, e, now_ms())?;
            }
            Ok(())
        })
    })
    .await
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Deliveries whose outcome is not yet written as succeeded.
async fn open_deliveries(db: &Db) -> i64 {
    db.run(|c| {
        Ok(wagate::db_run!(c, |c| diesel::sql_query(
            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE state <> 'succeeded'"
        )
        .get_result::<Count>(c))?
        .n)
    })
    .await
    .unwrap_or(-1)
}

fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Runs both phases on one backend; false when deliveries are missing.
async fn run_backend(label: &str, url: &str, o: &Opts) -> bool {
    let (addr, rx) = receiver().await;
    let b = start(url, o, &format!("http://{addr}/hook")).await;
    let db = b.server.gateway.db().clone();
    let mut complete = true;
    println!("-- {label}");

    // 1. Throughput: a backlog recorded as fast as one generator can.
    rx.lock().unwrap().reset();
    let n = o.events;
    let t_gen = Instant::now();
    let mut first_commit = None;
    let mut from = 0;
    while from < n {
        let k = o.batch.min(n - from);
        record(&db, &b, from, k).await.expect("record events");
        first_commit.get_or_insert_with(Instant::now);
        from += k;
    }
    let gen_secs = t_gen.elapsed().as_secs_f64();
    let first_commit = first_commit.unwrap();
    let all = wait_for(&rx, n as usize, Duration::from_secs(60)).await;
    let (got, dups, malformed, last) = {
        let r = rx.lock().unwrap();
        (r.seen.len(), r.duplicates, r.malformed, r.last)
    };
    let span = last
        .map(|l| l.saturating_duration_since(first_commit))
        .unwrap_or_default()
        .as_secs_f64();
    println!(
        "throughput  recorded {n} events in {gen_secs:.2} s ({:.0} events/s, {} per transaction)",
        n as f64 / gen_secs,
        o.batch
    );
    println!(
        "throughput  {:>8.0} deliveries/s   first commit → last delivery {span:.2} s   unique webhook-ids {got}/{n}   duplicates {dups}   malformed {malformed}{}",
        got as f64 / span.max(1e-9),
        if all { "" } else { "   INCOMPLETE (60 s)" }
    );
    complete &= all && got as u64 == n;
    // The log trails the receiver by up to one flush per lane.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "throughput  deliveries still open in the database 0.5 s after the last one arrived: {}",
        open_deliveries(&db).await
    );

    // 2. Latency: one event per transaction at a steady rate (open loop, ≤ 64 in flight).
    rx.lock().unwrap().reset();
    let total = o.rate * o.seconds;
    let interval = Duration::from_secs_f64(1.0 / o.rate as f64);
    let in_flight = Arc::new(Semaphore::new(64));
    let commits: Arc<Mutex<Vec<u32>>> = Arc::default();
    let b = Arc::new(b);
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(t0 + interval.mul_f64(i as f64)).await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let (db, b, commits) = (db.clone(), b.clone(), commits.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = record(&db, &b, n + i, 1).await.is_ok();
            commits.lock().unwrap().push(t.elapsed().as_micros() as u32);
            drop(permit);
            ok
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += u64::from(!t.await.unwrap_or(false));
    }
    let achieved = total as f64 / t0.elapsed().as_secs_f64();
    let all = wait_for(&rx, (total - failed) as usize, Duration::from_secs(30)).await;
    let (got, dups, malformed, mut lat) = {
        let r = rx.lock().unwrap();
        (
            r.seen.len(),
            r.duplicates,
            r.malformed,
            r.latencies_us.clone(),
        )
    };
    lat.sort_unstable();
    let ms = |us: i64| us as f64 / 1000.0;
    println!(
        "latency     offered {}/s for {} s, achieved {achieved:.0} events/s (1 per transaction, {failed} failed)",
        o.rate, o.seconds
    );
    println!(
        "latency     event → webhook   p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   max {:>8.2} ms   received {got}/{total}   duplicates {dups}   malformed {malformed}{}",
        ms(pct(&lat, 0.50)),
        ms(pct(&lat, 0.90)),
        ms(pct(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or(0)),
        if all { "" } else { "   INCOMPLETE (30 s)" }
    );
    let mut c = commits.lock().unwrap().clone();
    c.sort_unstable();
    println!(
        "latency     event transaction (record + commit)   p50 {:>7.2} ms   p99 {:>7.2} ms",
        pct(&c, 0.50) as f64 / 1000.0,
        pct(&c, 0.99) as f64 / 1000.0
    );
    complete &= all && failed == 0 && got as u64 == total;

    let Ok(b) = Arc::try_unwrap(b) else {
        unreachable!("every generator task has finished")
    };
    b.server.shutdown().await;
    complete
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let complete = rt.block_on(async {
        println!(
            "wagate webhook benchmark: {} CPUs, all in one process on loopback (gateway + generator + receiver)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        println!(
            "  {} sessions, 1 project-wide webhook (message.received), per-webhook concurrency {}, pool 16",
            o.sessions, o.concurrency
        );
        println!(
            "  throughput: {} events, {} per transaction; latency: {}/s for {} s, 1 per transaction",
            o.events, o.batch, o.rate, o.seconds
        );
        println!("  targets: >= 2000 deliveries/s, event → webhook p99 < 50 ms (printed, not asserted)");
        let (addr, _) = receiver().await;
        println!(
            "receiver ceiling ({} keep-alive connections, one request at a time each, no database): {:.0} req/s",
            o.concurrency,
            receiver_ceiling(addr, o.concurrency, 2.0).await
        );

        let dir = tempfile::tempdir().unwrap();
        let sqlite = dir.path().join("bench.db").to_string_lossy().into_owned();
        let mut complete = run_backend("sqlite (temp file, WAL, synchronous=FULL)", &sqlite, &o).await;

        if let Some(pg) =
            ScratchPg::from_env(&["WAGATE_BENCH_DATABASE_URL", "WAGATE_TEST_DATABASE_URL"])
        {
            complete &= run_backend("postgres", &pg.url, &o).await;
        }
        complete
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    if !complete {
        eprintln!("deliveries missing: see INCOMPLETE above");
        std::process::exit(1);
    }
}
