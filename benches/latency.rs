//! End-to-end latency benchmark: what a user of the gateway waits for, from outside.
//!
//! wasim (the loopback WhatsApp server) runs in this process with `--recipients` WhatsApp
//! accounts, each a real whatsapp-rust client that acknowledges what it receives (delivery
//! receipts, as a phone does). The gateway runs as its own process (`wagate serve
//! --whatsapp-url`, built with the `simulator` feature) with `--sessions` linked sessions and one
//! project-wide webhook pointing at a receiver on loopback in this process. The gateway has its
//! own runtime and CPU time, so the load generator, the receiver and the recipients here do not
//! queue behind its tasks; every time below is taken in this process on one monotonic clock.
//!
//! 1. Outbound: signed RK `POST /api/v1/send` at `--rate` messages/s per session, spread over
//!    the recipients, for `--seconds`. Per message: the 201 itself (request written → answer
//!    read), then from the 201 to the webhook `message.status` `sent` (WhatsApp's server ack) and
//!    to `delivered` (the recipient device's receipt).
//! 2. Inbound: the recipients send to the sessions at `--inbound-rate` messages/s in all (default
//!    the outbound total); from the send call to the webhook `message.received`.
//! 3. Reference: the same recipients sending to each other at the outbound total rate, with no
//!    gateway: send → server ack, send → delivery receipt, send → the peer's message event. That
//!    is the floor of WhatsApp (wasim) and the clients on this machine; the gateway adds the rest.
//!
//! Before the measured phases every session exchanges one message with every recipient in both
//! directions (Signal sessions set up), unmeasured. Target: p99 < 100 ms for accept → sent,
//! accept → delivered and inbound at 10 sessions × 20 messages/s.
//!
//! ```text
//! cargo bench --bench latency --features simulator -- [--sessions 10] [--rate 20] [--seconds 10]
//!     [--recipients 5] [--inbound-rate 200] [--in-flight 512]
//! ```
//!
//! SQLite (a temp file) always; PostgreSQL too when WAGATE_BENCH_DATABASE_URL is set (a scratch
//! database is created and dropped). WAGATE_BENCH_LOG is the gateway's RUST_LOG (default `warn`);
//! when set, the log is kept as `wagate-bench-latency-<backend>.log` in the temp directory.
//! Figures are printed, never asserted; the run fails only when messages go missing. Loopback
//! only, bounded in count (`--seconds` × rate) and time (every wait has a deadline), and the
//! gateway process is killed when the benchmark ends, fails or panics.

// A benchmark, not product code: a panic is its failure report.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/linked.rs"]
mod linked;
#[path = "common/process.rs"]
mod process;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{ScratchPg, flag};
use linked::{Gateway, Project, create_project, link, signed};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wagate::client;
use wagate::proto::v1::CreateWebhookRequest;
use wagate::proto::v1::webhooks_service_client::WebhooksServiceClient;
use wasim::client::{Admin, ClientOptions, TestClient};
use wasim::wacore::store::in_memory::InMemoryBackend;
use wasim::wacore::types::presence::ReceiptType;
use wasim::waproto::whatsapp as wa;
use wasim::whatsapp_rust::send::SendOptions;
use wasim::whatsapp_rust::types::events::Event;
use wasim::whatsapp_rust::{Client, Jid};

struct Opts {
    sessions: usize,
    rate: u64,
    seconds: u64,
    recipients: usize,
    inbound_rate: u64,
    in_flight: usize,
}

fn opts() -> Opts {
    let sessions = flag("--sessions", 10).clamp(1, 200) as usize;
    let rate = flag("--rate", 20).clamp(1, 1000);
    Opts {
        sessions,
        rate,
        seconds: flag("--seconds", 10).clamp(1, 120),
        recipients: flag("--recipients", 5).clamp(1, 50) as usize,
        inbound_rate: flag("--inbound-rate", sessions as u64 * rate).clamp(1, 5000),
        in_flight: flag("--in-flight", 512).clamp(1, 4096) as usize,
    }
}

/// Longest wait for anything still outstanding after a phase (deliveries, webhooks).
const DRAIN: Duration = Duration::from_secs(30);

/// What the webhook receiver saw: the first arrival of each message's events.
#[derive(Default)]
struct Hooks {
    /// webhook-id values seen (a second arrival is a duplicate delivery).
    ids: HashSet<String>,
    duplicates: u64,
    /// Gateway message id → first `message.status` `sent` / `delivered`.
    sent: HashMap<String, Instant>,
    delivered: HashMap<String, Instant>,
    /// WhatsApp message id → first `message.received`.
    received: HashMap<String, Instant>,
}

type SharedHooks = Arc<Mutex<Hooks>>;

async fn hook(
    State(seen): State<SharedHooks>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let at = Instant::now();
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::OK;
    };
    let mut s = seen.lock().unwrap();
    if let Some(id) = headers.get("webhook-id").and_then(|h| h.to_str().ok())
        && !s.ids.insert(id.to_owned())
    {
        s.duplicates += 1;
        return StatusCode::OK;
    }
    let id = v["messageId"].as_str().unwrap_or_default().to_owned();
    match (v["event"].as_str(), v["status"].as_str()) {
        (Some("message.status"), Some("sent")) => {
            s.sent.entry(id).or_insert(at);
        }
        (Some("message.status"), Some("delivered")) => {
            s.delivered.entry(id).or_insert(at);
        }
        (Some("message.received"), _) => {
            s.received.entry(id).or_insert(at);
        }
        _ => {}
    }
    StatusCode::OK
}

/// The webhook receiver on a loopback port; answers 200 at once.
async fn start_receiver() -> (SharedHooks, String) {
    let seen = SharedHooks::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

/// What a recipient client saw of the messages it sent and received (first arrival of each).
#[derive(Default)]
struct Seen {
    acked: HashMap<String, Instant>,
    delivered: HashMap<String, Instant>,
    received: HashMap<String, Instant>,
}

/// A WhatsApp account at wasim with one linked device: a real whatsapp-rust client whose
/// events are drained (and timed) in the background.
struct Recipient {
    phone: String,
    client: Arc<Client>,
    seen: Arc<Mutex<Seen>>,
    _bot: TestClient,
}

async fn recipient(addr: std::net::SocketAddr, phone: String) -> Recipient {
    let wait = Duration::from_secs(30);
    let mut bot = TestClient::start(
        addr,
        Arc::new(InMemoryBackend::new()),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let qr = bot.next_qr(wait).await.unwrap();
    Admin::new(addr).scan(&qr, &phone).await.unwrap();
    bot.connected(wait).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut events = std::mem::replace(&mut bot.events, tokio::sync::mpsc::channel(1).1);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let at = Instant::now();
            let mut s = s.lock().unwrap();
            match &*ev {
                Event::ServerAck(a) => {
                    s.acked.entry(a.id.clone()).or_insert(at);
                }
                Event::Receipt(r)
                    if matches!(r.r#type, ReceiptType::Delivered | ReceiptType::Inactive) =>
                {
                    for id in &r.message_ids {
                        s.delivered.entry(id.to_string()).or_insert(at);
                    }
                }
                Event::Messages(batch) => {
                    for m in batch.iter() {
                        s.received.entry(m.info.id.to_string()).or_insert(at);
                    }
                }
                _ => {}
            }
        }
    });
    Recipient {
        phone,
        client: bot.client(),
        seen,
        _bot: bot,
    }
}

fn jid(phone: &str) -> Jid {
    format!("{phone}@s.whatsapp.net").parse().unwrap()
}

/// Sends a text under a chosen WhatsApp id (so its arrival can be matched).
async fn wa_send(client: &Client, to: &str, id: &str) -> bool {
    let msg = wa::Message {
        conversation: Some(format!("latency {id}")),
        ..Default::default()
    };
    let send =
        client.send_message_with_options(jid(to), msg, SendOptions::default().with_message_id(id));
    matches!(
        tokio::time::timeout(Duration::from_secs(30), send).await,
        Ok(Ok(_))
    )
}

/// WhatsApp ids unique to this run: `3EB0` + 16 hex digits, like the clients' own.
fn wa_id(run: u32, phase: u32, i: u64) -> String {
    format!("3EB0{run:08X}{phase:02X}{i:06X}")
}

/// A linked session, as the load generator addresses it.
struct Linked {
    device_code: String,
    phone: String,
}

/// One signed RK send; answers the message id with the times the request went out and its 201
/// came back.
async fn rk_send(
    http: &reqwest::Client,
    url: &str,
    p: &Project,
    device_code: &str,
    to: &str,
    text: String,
) -> Result<(String, Instant, Instant), String> {
    let body = serde_json::json!({"recipient": to, "type": "text", "message": text}).to_string();
    let ts = client::unix_now();
    let sig = client::rk_signature(&p.api_key, &p.api_secret, &ts, body.as_bytes());
    let t0 = Instant::now();
    let resp = http
        .post(url)
        .header("X-API-KEY", &p.api_key)
        .header("X-DEVICE-CODE", device_code)
        .header("X-TIMESTAMP", ts)
        .header("X-SIGNATURE", sig)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    let t1 = Instant::now();
    if status != 201 {
        return Err(format!("{status}: {v}"));
    }
    Ok((
        v["data"]["id"].as_str().unwrap_or_default().to_owned(),
        t0,
        t1,
    ))
}

/// Waits until `done` holds, at most `limit`; answers whether it did.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// p50 / p99 / max of signed latencies in ms.
struct Dist {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn dist(mut v: Vec<f64>) -> Dist {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Dist {
        n: v.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

impl std::fmt::Display for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} / p99 {:.1} / max {:.1} ms (n = {})",
            self.p50, self.p99, self.max, self.n
        )
    }
}

/// `b - a` in ms, negative when `b` came first.
fn ms(a: Instant, b: Instant) -> f64 {
    if b >= a {
        (b - a).as_secs_f64() * 1000.0
    } else {
        -((a - b).as_secs_f64() * 1000.0)
    }
}

/// Sends `total` things at `per_sec` (an open loop: one task per tick, at most `in_flight` at
/// once), and collects what each answered.
async fn steady<T, F, Fut>(total: u64, per_sec: u64, in_flight: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec as f64));
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        let permit = gate.clone().acquire_owned().await.unwrap();
        let fut = f(i);
        tasks.spawn(async move {
            let out = fut.await;
            drop(permit);
            out
        });
    }
    let mut out = Vec::with_capacity(total as usize);
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

struct Figures {
    sent_p99: f64,
    delivered_p99: f64,
    inbound_p99: f64,
}

#[allow(clippy::too_many_arguments)]
async fn run_backend(
    label: &str,
    db_url: &str,
    o: &Opts,
    sim: &wasim::ServerHandle,
    recipients: &[Recipient],
    phones: &str,
    run: u32,
) -> Figures {
    let n = o.sessions;
    let dir = tempfile::tempdir().unwrap();
    let log = match std::env::var("WAGATE_BENCH_LOG") {
        Ok(_) => std::env::temp_dir().join(format!("wagate-bench-latency-{label}.log")),
        Err(_) => dir.path().join("gateway.log"),
    };
    let _ = std::fs::remove_file(&log);
    let key = hex::encode(wagate::crypto::random_bytes::<32>());
    let max = (n + 10).to_string();
    let project = create_project(
        db_url,
        &key,
        "bench-latency",
        &[
            "--max-sessions",
            &max,
            "--rate-limit-per-minute",
            "10000000",
            "--monthly-quota",
            "100000000",
        ],
    );
    let (hooks, hook_url) = start_receiver().await;
    let mut gw = Gateway::spawn(
        db_url,
        &key,
        &sim.ws_url(),
        &["--webhook-allow-private", "--webhook-retry-base-ms", "100"],
        &log,
    );
    let c = gw.connect().await;
    let base = format!("http://{}", gw.addr);
    let mut webhooks = WebhooksServiceClient::connect(base.clone()).await.unwrap();
    webhooks
        .create_webhook(signed(
            &project,
            "wagate.v1.WebhooksService",
            "CreateWebhook",
            CreateWebhookRequest {
                session_id: String::new(),
                url: hook_url,
                events: vec!["message.status".into(), "message.received".into()],
            },
        ))
        .await
        .unwrap();

    let admin = Admin::new(sim.addr());
    let t0 = Instant::now();
    let linked: Vec<Linked> = futures::future::join_all((0..n).map(|i| {
        let (c, project, admin) = (c.clone(), &project, &admin);
        let phone = format!("{phones}{i:04}");
        async move {
            let (s, _) = link(c, project, admin, i, phone.clone()).await;
            Linked {
                device_code: s.device_code,
                phone,
            }
        }
    }))
    .await;
    gw.check_alive();
    println!(
        "[{label}] {n} sessions linked in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(o.in_flight)
        .build()
        .unwrap();
    let send_url = format!("{base}/api/v1/send");
    let (project, linked, http) = (Arc::new(project), Arc::new(linked), Arc::new(http));
    let r_count = recipients.len();

    // Warm-up, unmeasured: one message each way per session and recipient.
    let mut warm_ids = Vec::new();
    for s in linked.iter() {
        for r in recipients {
            let (id, _, _) = rk_send(
                &http,
                &send_url,
                &project,
                &s.device_code,
                &r.phone,
                "warm-up".into(),
            )
            .await
            .unwrap();
            warm_ids.push(id);
        }
    }
    let mut warm_in = Vec::new();
    for (j, r) in recipients.iter().enumerate() {
        for (i, s) in linked.iter().enumerate() {
            let id = wa_id(run, 0, (j * n + i) as u64);
            assert!(wa_send(&r.client, &s.phone, &id).await, "warm-up send");
            warm_in.push(id);
        }
    }
    let warmed = until(Duration::from_secs(60), || {
        let h = hooks.lock().unwrap();
        warm_ids.iter().all(|id| h.delivered.contains_key(id))
            && warm_in.iter().all(|id| h.received.contains_key(id))
    })
    .await;
    assert!(
        warmed,
        "warm-up messages not all delivered within 60 s; gateway log:\n{}",
        gw.log_tail()
    );

    // 1. Outbound.
    let total = n as u64 * o.rate * o.seconds;
    let started = Instant::now();
    let answers = steady(total, n as u64 * o.rate, o.in_flight, |i| {
        let (http, url, p, linked) = (
            http.clone(),
            send_url.clone(),
            project.clone(),
            linked.clone(),
        );
        let to = recipients[(i as usize / n) % r_count].phone.clone();
        async move {
            let s = &linked[i as usize % n];
            rk_send(&http, &url, &p, &s.device_code, &to, format!("latency {i}")).await
        }
    })
    .await;
    let sending = started.elapsed();
    let accepted: Vec<(String, Instant, Instant)> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok().cloned())
        .collect();
    let refused: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    until(DRAIN, || {
        let h = hooks.lock().unwrap();
        accepted
            .iter()
            .all(|(id, _, _)| h.delivered.contains_key(id))
    })
    .await;
    gw.check_alive();
    let (answer, to_sent, to_delivered, missing_sent, missing_delivered) = {
        let h = hooks.lock().unwrap();
        let answer = dist(accepted.iter().map(|(_, a, b)| ms(*a, *b)).collect());
        let to_sent = dist(
            accepted
                .iter()
                .filter_map(|(id, _, b)| h.sent.get(id).map(|t| ms(*b, *t)))
                .collect(),
        );
        let to_delivered = dist(
            accepted
                .iter()
                .filter_map(|(id, _, b)| h.delivered.get(id).map(|t| ms(*b, *t)))
                .collect(),
        );
        let missing = |m: &HashMap<String, Instant>| {
            accepted
                .iter()
                .filter(|(id, _, _)| !m.contains_key(id))
                .count()
        };
        (
            answer,
            to_sent,
            to_delivered,
            missing(&h.sent),
            missing(&h.delivered),
        )
    };
    println!(
        "[{label}] outbound: {} accepted, {} refused, sent in {:.1} s ({:.0} msg/s; {n} sessions x {} msg/s to {r_count} recipients)",
        accepted.len(),
        refused.len(),
        sending.as_secs_f64(),
        accepted.len() as f64 / sending.as_secs_f64(),
        o.rate
    );
    if let Some(e) = refused.first() {
        println!("[{label}]   first refusal: {e}");
    }
    println!("[{label}]   201 answer:          {answer}");
    println!("[{label}]   201 -> sent:         {to_sent}");
    println!("[{label}]   201 -> delivered:    {to_delivered}");
    println!("[{label}]   without sent: {missing_sent}, without delivered: {missing_delivered}");

    // 2. Inbound.
    let total_in = o.inbound_rate * o.seconds;
    let recipients_clients: Arc<Vec<(Arc<Client>, String)>> = Arc::new(
        recipients
            .iter()
            .map(|r| (r.client.clone(), r.phone.clone()))
            .collect(),
    );
    let sends = steady(total_in, o.inbound_rate, o.in_flight, |i| {
        let (rc, linked) = (recipients_clients.clone(), linked.clone());
        async move {
            let (client, _) = &rc[i as usize % rc.len()];
            let to = &linked[(i as usize / rc.len()) % linked.len()].phone;
            let id = wa_id(run, 1, i);
            let t0 = Instant::now();
            wa_send(client, to, &id).await.then_some((id, t0))
        }
    })
    .await;
    let sent_in: Vec<(String, Instant)> = sends.into_iter().flatten().collect();
    until(DRAIN, || {
        let h = hooks.lock().unwrap();
        sent_in.iter().all(|(id, _)| h.received.contains_key(id))
    })
    .await;
    gw.check_alive();
    let (inbound, missing_in, duplicates) = {
        let h = hooks.lock().unwrap();
        let d = dist(
            sent_in
                .iter()
                .filter_map(|(id, t0)| h.received.get(id).map(|t| ms(*t0, *t)))
                .collect(),
        );
        let missing = sent_in
            .iter()
            .filter(|(id, _)| !h.received.contains_key(id))
            .count();
        (d, missing, h.duplicates)
    };
    println!(
        "[{label}] inbound: {} of {total_in} sent by {r_count} accounts to {n} sessions at {} msg/s",
        sent_in.len(),
        o.inbound_rate
    );
    println!("[{label}]   send -> webhook:     {inbound}");
    println!(
        "[{label}]   without webhook: {missing_in}; duplicate webhook deliveries: {duplicates}"
    );

    drop(c);
    drop(webhooks);
    let stopped = gw.stop();
    println!(
        "[{label}] gateway stopped (SIGTERM) in {:.2} s",
        stopped.as_secs_f64()
    );
    assert_eq!(
        (missing_sent, missing_delivered, missing_in, duplicates),
        (0, 0, 0, 0),
        "messages went missing or were delivered twice"
    );
    Figures {
        sent_p99: to_sent.p99,
        delivered_p99: to_delivered.p99,
        inbound_p99: inbound.p99,
    }
}

/// The floor: the recipients sending to each other at `per_sec`, no gateway in between.
async fn reference(
    recipients: &[Recipient],
    per_sec: u64,
    seconds: u64,
    in_flight: usize,
    run: u32,
) {
    let r = recipients.len();
    if r < 2 {
        println!("[reference] skipped: needs 2 recipients or more");
        return;
    }
    let peers: Arc<Vec<(Arc<Client>, String)>> = Arc::new(
        recipients
            .iter()
            .map(|x| (x.client.clone(), x.phone.clone()))
            .collect(),
    );
    // Warm-up: each pair once (Signal sessions).
    for (a, x) in recipients.iter().enumerate() {
        let to = &recipients[(a + 1) % r].phone;
        assert!(wa_send(&x.client, to, &wa_id(run, 2, a as u64)).await);
    }
    let sends = steady(per_sec * seconds, per_sec, in_flight, |i| {
        let peers = peers.clone();
        async move {
            let a = i as usize % peers.len();
            let (client, _) = &peers[a];
            let to = &peers[(a + 1) % peers.len()].1;
            let id = wa_id(run, 3, i);
            let t0 = Instant::now();
            wa_send(client, to, &id)
                .await
                .then_some((id, a, (a + 1) % peers.len(), t0))
        }
    })
    .await;
    let sent: Vec<_> = sends.into_iter().flatten().collect();
    until(DRAIN, || {
        sent.iter().all(|(id, from, _, _)| {
            recipients[*from]
                .seen
                .lock()
                .unwrap()
                .delivered
                .contains_key(id)
        })
    })
    .await;
    let pick = |f: &dyn Fn(&Seen) -> &HashMap<String, Instant>, side: bool| {
        dist(
            sent.iter()
                .filter_map(|(id, from, to, t0)| {
                    let s = recipients[if side { *to } else { *from }]
                        .seen
                        .lock()
                        .unwrap();
                    f(&s).get(id).map(|t| ms(*t0, *t))
                })
                .collect(),
        )
    };
    println!(
        "[reference] {} client-to-client messages at {per_sec} msg/s, no gateway:",
        sent.len()
    );
    println!(
        "[reference]   send -> server ack:   {}",
        pick(&|s| &s.acked, false)
    );
    println!(
        "[reference]   send -> receipt:      {}",
        pick(&|s| &s.delivered, false)
    );
    println!(
        "[reference]   send -> peer message: {}",
        pick(&|s| &s.received, true)
    );
}

fn verdict(p99: f64) -> &'static str {
    if p99 < 100.0 { "met" } else { "MISSED" }
}

fn summary(label: &str, f: &Figures) {
    println!(
        "SUMMARY {label}: p99 201->sent {:.1} ms [{}], 201->delivered {:.1} ms [{}], inbound {:.1} ms [{}] (target p99 < 100 ms)",
        f.sent_p99,
        verdict(f.sent_p99),
        f.delivered_p99,
        verdict(f.delivered_p99),
        f.inbound_p99,
        verdict(f.inbound_p99)
    );
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "wagate latency benchmark: {} sessions x {} msg/s for {} s to {} recipients, inbound {} msg/s, {} CPUs, \
             loopback, wasim and the load in-process, gateway as its own process",
            o.sessions,
            o.rate,
            o.seconds,
            o.recipients,
            o.inbound_rate,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        let sim = wasim::Server::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("wasim");
        let run = u32::from_le_bytes(wagate::crypto::random_bytes::<4>());
        let recipients: Vec<Recipient> = futures::future::join_all(
            (0..o.recipients).map(|j| recipient(sim.addr(), format!("1555040{j:04}"))),
        )
        .await;

        reference(&recipients, o.sessions as u64 * o.rate, o.seconds, o.in_flight, run).await;

        let dir = tempfile::tempdir().unwrap();
        let sqlite = dir.path().join("bench.db").to_string_lossy().into_owned();
        let f = run_backend("sqlite", &sqlite, &o, &sim, &recipients, "1555041", run.wrapping_add(1)).await;
        summary("sqlite", &f);

        if let Some(pg) = ScratchPg::from_env(&["WAGATE_BENCH_DATABASE_URL"]) {
            let f = run_backend("postgres", &pg.url, &o, &sim, &recipients, "1555042", run.wrapping_add(2)).await;
            summary("postgres", &f);
        }
        drop(recipients);
        sim.shutdown().await;
    });
}
