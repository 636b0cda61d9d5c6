//! Hostile-traffic probe: the denial-of-service probes of the hardening issue, run against the
//! release `wagate serve` binary as its own process (fresh SQLite file per scenario; PostgreSQL
//! too for scenario 5), with its memory read from `/proc/<pid>/status` (VmRSS, and VmHWM for
//! peaks). It PRINTS figures and never asserts them, so a fix is shown before/after by running
//! it on both commits.
//!
//! 1. Unbounded metric series: requests (GET and POST) to distinct nonexistent
//!    `/wagate.v1.…` and `/grpc.…` paths; RSS before/after and the size of `GET /metrics`.
//! 2. Concurrent password hashing: 128 concurrent logins, each from its own loopback address
//!    (127.0.0.2…); peak RSS (VmHWM), RSS 2 s later, the statuses.
//! 3. Bodies before auth: connections that declare an 11 MB `POST /api/v1/send` (and a gRPC
//!    `SendMessage` over HTTP/2) with an unknown key, send all but the last byte and hold;
//!    RSS and whether/when the server closed them. Then idle TCP connections (and idle HTTP/2
//!    connections that only sent the preface): how many are still open after 5/30/65 s.
//! 4. Samples piling up with no scrape: cheap `GET /health` requests, RSS before/after, then
//!    one scrape of `/metrics` and RSS again.
//! 5. Poison message: tenant B sends signed messages at full speed while tenant A sends
//!    messages containing U+0000, beside the same load without A; on PostgreSQL (when
//!    WAGATE_BENCH_DATABASE_URL is set) and SQLite.
//!
//! ```text
//! cargo bench --bench hostile -- [--only 1,3] [--scale 100] [--connections 32] [--hold 30]
//!                                [--idle-max 65] [--seconds 5] [--budget 240]
//! ```
//!
//! `--scale` is a percentage applied to every count (e.g. `--scale 2 --hold 2 --idle-max 5
//! --seconds 1` for a smoke run); `--budget` bounds each scenario's traffic in seconds.
//! WAGATE_BENCH_LOG is the gateway's RUST_LOG (default `warn`); its log stays in the temp
//! directory of the scenario. Everything goes to 127.0.0.0/8 only, every loop is bounded, and
//! the gateway process is killed when its guard drops (end, failure or panic; not on SIGKILL
//! of the benchmark itself).

// A benchmark, not product code: a panic is its failure report.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/process.rs"]
mod process;
use process::{GATEWAY, spawn_gateway, tail};

use common::{ScratchPg, flag, flag_str};
use futures::SinkExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use wagate::client;

/// Just under the 11 MiB body limit, so the size check does not refuse it.
const BIG_BODY: usize = 11_000_000;
const BODY: &str =
    r#"{"recipient":"6281234567890","type":"text","message":"Hello from RK Connect"}"#;
/// A text message with U+0000 in it (the JSON escape; the server decodes it to a NUL).
const POISON: &str =
    r#"{"recipient":"6281234567890","type":"text","message":"poison \u0000 message"}"#;
const GRPC_SEND: &str = "/wagate.v1.MessagingService/SendMessage";

struct Opts {
    only: Vec<u64>,
    scale: u64,
    connections: usize,
    hold: u64,
    idle_max: u64,
    seconds: u64,
    budget: Duration,
}

fn opts() -> Opts {
    let only = flag_str("--only")
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3, 4, 5]);
    Opts {
        only,
        scale: flag("--scale", 100).clamp(1, 100),
        connections: flag("--connections", 32).clamp(1, 256) as usize,
        hold: flag("--hold", 30).clamp(1, 120),
        idle_max: flag("--idle-max", 65).clamp(1, 120),
        seconds: flag("--seconds", 5).clamp(1, 60),
        budget: Duration::from_secs(flag("--budget", 240).clamp(10, 900)),
    }
}

impl Opts {
    /// `full` scaled by `--scale` percent, at least 1.
    fn n(&self, full: u64) -> u64 {
        (full * self.scale / 100).max(1)
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process and its memory

/// VmRSS and VmHWM (peak) of a process, in KiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {:.1} MiB (VmHWM {:.1} MiB)",
            self.rss as f64 / 1024.0,
            self.hwm as f64 / 1024.0
        )
    }
}

fn proc_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mem_of(pid: u32) -> Mem {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Mem {
        rss: proc_field(&s, "VmRSS:").unwrap_or(0),
        hwm: proc_field(&s, "VmHWM:").unwrap_or(0),
    }
}

/// The soft "Max open files" limit of a process (`self` or a pid).
fn open_files_limit(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The gateway process; killed (SIGKILL) when dropped, so a failing or panicking run never
/// leaves it behind.
struct Gateway {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Gateway {
    async fn start(db_url: &str, key: &str, log: &Path) -> Gateway {
        let (child, addr) = spawn_gateway(db_url, key, &["--node-id", "hostile"], log);
        let mut gw = Gateway {
            child: Some(child),
            addr,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            gw.check_alive();
            if let Ok((200, _)) = fetch(addr, None, get("/health")).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not answer /health within 30 s; its log:\n{}",
                tail(&gw.log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let start-up allocations settle before anyone reads a baseline.
        tokio::time::sleep(Duration::from_secs(1)).await;
        gw
    }

    /// A gateway on a fresh SQLite file in `dir`.
    async fn sqlite(dir: &tempfile::TempDir) -> Gateway {
        let db = dir.path().join("hostile.db").to_string_lossy().into_owned();
        Gateway::start(&db, &new_key(), &dir.path().join("gateway.log")).await
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn mem(&self) -> Mem {
        mem_of(self.pid())
    }

    fn check_alive(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "the gateway exited with {status}; its log:\n{}",
                tail(&self.log)
            );
        }
    }

    /// "alive", or how it ended (an OOM kill shows here).
    fn state(&mut self) -> String {
        match self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            Some(status) => format!("EXITED ({status})"),
            None => "alive".into(),
        }
    }

    fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(needle)
            .count()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn new_key() -> String {
    hex::encode(wagate::crypto::random_bytes::<32>())
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 and HTTP/2 clients (hyper over tokio)

/// hyper's HTTP/2 client spawns its connection tasks here.
#[derive(Clone, Copy)]
struct Exec;

impl<F> hyper::rt::Executor<F> for Exec
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type Req = hyper::Request<Full<Bytes>>;

/// A TCP connection to `addr`, from the loopback address `from` when given.
async fn tcp(addr: SocketAddr, from: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn h1(addr: SocketAddr, from: Option<Ipv4Addr>) -> Result<H1, String> {
    let s = tcp(addr, from).await.map_err(|e| format!("connect: {e}"))?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

async fn call(c: &mut H1, req: Req) -> Result<(u16, Bytes), String> {
    c.ready().await.map_err(|e| format!("closed: {e}"))?;
    let resp = c
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// One request on its own connection.
async fn fetch(addr: SocketAddr, from: Option<Ipv4Addr>, req: Req) -> Result<(u16, Bytes), String> {
    let mut c = h1(addr, from).await?;
    call(&mut c, req).await
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Req {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).expect("request")
}

fn get(path: &str) -> Req {
    request("GET", path, &[], Bytes::new())
}

// ---------------------------------------------------------------------------------------------
// Load driver and printing

#[derive(Default)]
struct Driven {
    elapsed: Duration,
    statuses: BTreeMap<String, u64>,
    /// Latencies of the 2xx answers, in µs.
    lat_us: Vec<u32>,
}

impl Driven {
    fn count(&self) -> u64 {
        self.statuses.values().sum()
    }
    fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(k, _)| k.starts_with('2'))
            .map(|(_, v)| v)
            .sum()
    }
}

fn statuses(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `conns` keep-alive connections send `make(i)` for i in 0..max until `until`; each
/// request is bounded by 30 s. A failed connection is replaced.
async fn drive(
    addr: SocketAddr,
    conns: usize,
    max: u64,
    until: Instant,
    make: Arc<dyn Fn(u64) -> Req + Send + Sync>,
) -> Driven {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, make) = (next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut d = Driven::default();
            let mut conn: Option<H1> = None;
            let mut failures = 0;
            loop {
                if Instant::now() >= until || failures > 20 {
                    break;
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match h1(addr, None).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            *d.statuses.entry(e).or_default() += 1;
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(30), call(c, make(i))).await {
                    Ok(Ok((status, _))) => {
                        if (200..300).contains(&status) {
                            d.lat_us.push(t.elapsed().as_micros() as u32);
                        }
                        *d.statuses.entry(status.to_string()).or_default() += 1;
                    }
                    Ok(Err(e)) => {
                        *d.statuses.entry(short(&e)).or_default() += 1;
                        conn = None;
                        failures += 1;
                    }
                    Err(_) => {
                        *d.statuses.entry("timeout 30 s".into()).or_default() += 1;
                        conn = None;
                        failures += 1;
                    }
                }
            }
            d
        }));
    }
    let mut all = Driven::default();
    for t in tasks {
        let d = t.await.expect("load task");
        for (k, v) in d.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.lat_us.extend(d.lat_us);
    }
    all.elapsed = t0.elapsed();
    all.lat_us.sort_unstable();
    all
}

fn short(e: &str) -> String {
    e.chars().take(60).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Unbounded metric series

async fn scenario1(o: &Opts) {
    let n = o.n(50_000);
    println!(
        "\n== 1. metric series: {n} requests to distinct nonexistent /wagate.v1.* and /grpc.* paths"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::sqlite(&dir).await;
    let before = gw.mem();
    println!("[1] before: {before}");
    let make: Arc<dyn Fn(u64) -> Req + Send + Sync> = Arc::new(|i| match i % 4 {
        0 => get(&format!("/wagate.v1.X{i}/Y")),
        1 => request(
            "POST",
            &format!("/wagate.v1.X{i}/Y"),
            &[("content-type", "application/grpc")],
            Bytes::from_static(&[0, 0, 0, 0, 0]),
        ),
        2 => get(&format!("/grpc.X{i}/Y")),
        _ => request(
            "POST",
            &format!("/grpc.X{i}/Y"),
            &[("content-type", "application/json")],
            Bytes::from_static(b"{}"),
        ),
    });
    let d = drive(gw.addr, o.connections, n, Instant::now() + o.budget, make).await;
    gw.check_alive();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gw.mem();
    println!(
        "[1] sent {} requests in {:.1} s ({:.0}/s, {} connections); statuses {}",
        d.count(),
        d.elapsed.as_secs_f64(),
        d.count() as f64 / d.elapsed.as_secs_f64(),
        o.connections,
        statuses(&d.statuses)
    );
    println!(
        "[1] after: {after}; growth {:+.1} MiB",
        (after.rss as f64 - before.rss as f64) / 1024.0
    );
    let t = Instant::now();
    match fetch(gw.addr, None, get("/metrics")).await {
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(&body);
            let series = text
                .lines()
                .filter(|l| l.starts_with("wagate_http_requests_total{"))
                .count();
            println!(
                "[1] GET /metrics: {status}, {} bytes ({:.1} MiB), {} lines, {series} wagate_http_requests_total series, rendered in {:.2} s",
                body.len(),
                mib(body.len()),
                text.lines().count(),
                t.elapsed().as_secs_f64()
            );
        }
        Err(e) => println!("[1] GET /metrics failed: {e}"),
    }
    println!("[1] after the scrape: {}", gw.mem());
}

// ---------------------------------------------------------------------------------------------
// 2. Concurrent password hashing

async fn scenario2(o: &Opts) {
    let n = o.n(128).min(250) as usize;
    println!(
        "\n== 2. password hashing: {n} concurrent logins, each from its own address 127.0.0.2..{}",
        n + 1
    );
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::sqlite(&dir).await;
    let (email, password) = ("probe@example.com", "correct horse battery staple");
    let reg = serde_json::json!({"email": email, "password": password, "name": "probe"});
    match fetch(
        gw.addr,
        None,
        request(
            "POST",
            "/api/v1/auth/register",
            &[("content-type", "application/json")],
            Bytes::from(reg.to_string()),
        ),
    )
    .await
    {
        Ok((s, _)) => println!("[2] register: {s}"),
        Err(e) => println!("[2] register failed: {e}"),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = gw.mem();
    println!("[2] before the logins: {before}");

    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = gw.pid();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(mem_of(pid).rss);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max
        })
    };
    let budget = o.budget;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let barrier = barrier.clone();
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let from = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
            let conn = h1(addr, Some(from)).await;
            barrier.wait().await;
            let mut c = match conn {
                Ok(c) => c,
                Err(e) => return (short(&e), Duration::ZERO),
            };
            let pw = if i % 2 == 0 {
                password
            } else {
                "wrong password 123"
            };
            let body = serde_json::json!({"email": email, "password": pw}).to_string();
            let req = request(
                "POST",
                "/api/v1/auth/login",
                &[("content-type", "application/json")],
                Bytes::from(body),
            );
            let t = Instant::now();
            let label = match tokio::time::timeout(budget, call(&mut c, req)).await {
                Ok(Ok((s, _))) => format!("{s} ({})", if i % 2 == 0 { "right" } else { "wrong" }),
                Ok(Err(e)) => short(&e),
                Err(_) => "timeout".into(),
            };
            (label, t.elapsed())
        }));
    }
    let mut seen = BTreeMap::new();
    let mut lat = Vec::new();
    for t in tasks {
        let (label, d) = t.await.expect("login task");
        *seen.entry(label).or_default() += 1;
        lat.push(d.as_micros() as u32);
    }
    let burst = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sampled_max = sampler.await.unwrap_or(0);
    lat.sort_unstable();
    let peak = gw.mem();
    println!(
        "[2] {n} logins answered in {:.2} s (latency p50 {:.0} ms, max {:.0} ms); statuses {}",
        burst.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 1.0),
        statuses(&seen)
    );
    println!(
        "[2] peak: VmHWM {:.1} MiB (highest VmRSS sampled every 5 ms: {:.1} MiB; +{:.1} MiB over the pre-login RSS)",
        peak.hwm as f64 / 1024.0,
        sampled_max as f64 / 1024.0,
        (peak.hwm as f64 - before.rss as f64) / 1024.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.check_alive();
    println!("[2] 2 s after: {}", gw.mem());
}

// ---------------------------------------------------------------------------------------------
// 3. Bodies before auth, idle connections

/// What one held connection saw.
#[derive(Default, Clone)]
struct Held {
    sent: usize,
    sent_at: Option<Duration>,
    send_error: Option<String>,
    answer: Option<(Duration, String)>,
    closed: Option<(Duration, String)>,
}

fn rk_headers(len: usize) -> String {
    let ts = client::unix_now();
    format!(
        "POST /api/v1/send HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         x-api-key: wgk_{}\r\nx-device-code: RK-0001\r\nx-timestamp: {ts}\r\nx-signature: {}\r\n\
         content-length: {len}\r\n\r\n",
        hex::encode(wagate::crypto::random_bytes::<16>()),
        hex::encode(wagate::crypto::random_bytes::<32>()),
    )
}

/// The body bytes: a JSON start, then filler.
fn filler(len: usize) -> Vec<u8> {
    let mut b = br#"{"recipient":"6281234567890","type":"text","message":""#.to_vec();
    b.resize(len, b'a');
    b
}

/// A raw HTTP/1.1 connection that sends the headers and all but the last body byte, then
/// reads until `stop`.
async fn hold_rest(
    addr: SocketAddr,
    t0: Instant,
    body: Arc<Vec<u8>>,
    send_for: Duration,
    done: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Held {
    let mut h = Held::default();
    let mut s = match tcp(addr, None).await {
        Ok(s) => s,
        Err(e) => {
            h.send_error = Some(format!("connect: {e}"));
            done.fetch_add(1, Ordering::Relaxed);
            return h;
        }
    };
    let head = rk_headers(BIG_BODY);
    let mut sent = 0;
    let send = async {
        s.write_all(head.as_bytes()).await?;
        for chunk in body[..BIG_BODY - 1].chunks(64 * 1024) {
            s.write_all(chunk).await?;
            sent += chunk.len();
        }
        s.flush().await
    };
    let r = tokio::time::timeout(send_for, send).await;
    h.sent = sent;
    match r {
        Ok(Ok(())) => h.sent_at = Some(t0.elapsed()),
        Ok(Err(e)) => h.send_error = Some(format!("{:?}", e.kind())),
        Err(_) => h.send_error = Some(format!("still sending after {} s", send_for.as_secs())),
    }
    done.fetch_add(1, Ordering::Relaxed);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) => { h.closed = Some((t0.elapsed(), "EOF".into())); break; }
                Ok(n) => {
                    if h.answer.is_none() {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        let status = text.lines().next().unwrap_or("").to_owned();
                        let code = text
                            .find("\"code\":\"")
                            .map(|i| text[i + 8..].split('"').next().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        h.answer = Some((t0.elapsed(), format!("{status} {code}").trim().to_owned()));
                    }
                }
                Err(e) => { h.closed = Some((t0.elapsed(), format!("{:?}", e.kind()))); break; }
            },
            _ = stop.changed() => break,
        }
    }
    h
}

/// One HTTP/2 connection with one gRPC `SendMessage` call: the 5-byte frame prefix declares
/// the whole message, all but its last byte is sent, then the call is held until `stop`.
async fn hold_grpc(
    addr: SocketAddr,
    t0: Instant,
    body: Arc<Vec<u8>>,
    send_for: Duration,
    done: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Held {
    let h = Arc::new(Mutex::new(Held::default()));
    // Counted once however this ends.
    struct Done(Arc<AtomicU64>, bool);
    impl Drop for Done {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut done = Done(done, false);
    let s = match tcp(addr, None).await {
        Ok(s) => s,
        Err(e) => {
            h.lock().unwrap().send_error = Some(format!("connect: {e}"));
            return h.lock().unwrap().clone();
        }
    };
    let (mut send, conn) =
        match hyper::client::conn::http2::handshake(Exec, hyper_util::rt::TokioIo::new(s)).await {
            Ok(x) => x,
            Err(e) => {
                h.lock().unwrap().send_error = Some(format!("handshake: {e}"));
                return h.lock().unwrap().clone();
            }
        };
    {
        let h = h.clone();
        tokio::spawn(async move {
            let r = conn.await;
            h.lock().unwrap().closed = Some((
                t0.elapsed(),
                match r {
                    Ok(()) => "closed".into(),
                    Err(e) => short(&e.to_string()),
                },
            ));
        });
    }
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let ts = client::unix_now();
    let key = format!("wgk_{}", hex::encode(wagate::crypto::random_bytes::<16>()));
    let sig = hex::encode(wagate::crypto::random_bytes::<32>());
    let req = hyper::Request::post(format!("http://{addr}{GRPC_SEND}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", key)
        .header("x-timestamp", ts)
        .header("x-signature", sig)
        .header("x-device-code", "RK-0001")
        .body(StreamBody::new(rx))
        .expect("gRPC request");
    if let Err(e) = send.ready().await {
        h.lock().unwrap().send_error = Some(format!("not ready: {e}"));
        return h.lock().unwrap().clone();
    }
    let resp = send.send_request(req);
    {
        let h = h.clone();
        tokio::spawn(async move {
            let answer = match resp.await {
                Ok(r) => {
                    let grpc = r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| format!(" grpc-status {v}"))
                        .unwrap_or_default();
                    let code = r
                        .headers()
                        .get("x-error-code")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| format!(" {v}"))
                        .unwrap_or_default();
                    format!("HTTP {}{grpc}{code}", r.status().as_u16())
                }
                Err(e) => format!("error: {}", short(&e.to_string())),
            };
            h.lock().unwrap().answer = Some((t0.elapsed(), answer));
        });
    }
    let len = (BIG_BODY - 5) as u32;
    let mut frame = vec![0u8];
    frame.extend_from_slice(&len.to_be_bytes());
    let feed = async {
        tx.send(Ok(Frame::data(Bytes::from(frame)))).await?;
        h.lock().unwrap().sent += 5;
        for chunk in body[5..BIG_BODY - 1].chunks(64 * 1024) {
            tx.send(Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                .await?;
            h.lock().unwrap().sent += chunk.len();
        }
        Ok::<(), futures::channel::mpsc::SendError>(())
    };
    let r = tokio::time::timeout(send_for, feed).await;
    {
        let mut g = h.lock().unwrap();
        match r {
            Ok(Ok(())) => g.sent_at = Some(t0.elapsed()),
            Ok(Err(_)) => g.send_error = Some("body dropped by the client connection".into()),
            Err(_) => g.send_error = Some(format!("still sending after {} s", send_for.as_secs())),
        }
    }
    done.0.fetch_add(1, Ordering::Relaxed);
    done.1 = true;
    // Hold the call (the sender stays alive) until told to stop.
    let _ = stop.changed().await;
    drop(tx);
    drop(send);
    h.lock().unwrap().clone()
}

fn secs_range(v: &[Duration]) -> String {
    match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) => format!("{:.1}–{:.1} s", a.as_secs_f64(), b.as_secs_f64()),
        _ => "-".into(),
    }
}

async fn held_bodies(o: &Opts, grpc: bool) {
    let n = o.n(32) as usize;
    let what = if grpc {
        "gRPC SendMessage over HTTP/2 (content-type application/grpc)"
    } else {
        "REST POST /api/v1/send (HTTP/1.1)"
    };
    let tag = if grpc { "3b" } else { "3a" };
    println!(
        "\n-- {tag}. {n} connections, {what}, unknown API key, declared {BIG_BODY} bytes, all but the last byte sent, held {} s",
        o.hold
    );
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::sqlite(&dir).await;
    let before = gw.mem();
    println!("[{tag}] before: {before}");
    let body = Arc::new(filler(BIG_BODY));
    let (stop_tx, stop_rx) = watch::channel(false);
    let send_for = o.budget.min(Duration::from_secs(60));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (body, stop, done) = (body.clone(), stop_rx.clone(), done.clone());
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            if grpc {
                hold_grpc(addr, t0, body, send_for, done, stop).await
            } else {
                hold_rest(addr, t0, body, send_for, done, stop).await
            }
        }));
    }
    // Wait until every connection has sent all but the last byte (or given up), bounded.
    let sent_deadline = Instant::now() + send_for + Duration::from_secs(5);
    while done.load(Ordering::Relaxed) < n as u64 && Instant::now() < sent_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent_time = t0.elapsed();
    // The last bytes handed to the sockets reach the server a moment later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_sent = gw.mem();
    println!(
        "[{tag}] sends done {:.1} s after the start, +1 s: {after_sent}; growth {:+.1} MiB for {n} x {:.1} MiB declared",
        sent_time.as_secs_f64(),
        (after_sent.rss as f64 - before.rss as f64) / 1024.0,
        mib(BIG_BODY)
    );
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    let after_hold = gw.mem();
    println!(
        "[{tag}] after holding {} s more: {after_hold}; gateway {}",
        o.hold,
        gw.state()
    );
    let _ = stop_tx.send(true);
    let mut held = Vec::new();
    for t in tasks {
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(10), t).await {
            held.push(h);
        }
    }
    let sent_all = held.iter().filter(|h| h.sent_at.is_some()).count();
    let sent_bytes: usize = held.iter().map(|h| h.sent).sum();
    let mut errors = BTreeMap::new();
    for h in &held {
        if let Some(e) = &h.send_error {
            *errors.entry(e.clone()).or_default() += 1;
        }
    }
    println!(
        "[{tag}] sends: {sent_all}/{n} sent all but the last byte (within {:.1} s: {}); {:.1} MiB handed to the sockets in all; send errors: {}",
        sent_time.as_secs_f64(),
        secs_range(&held.iter().filter_map(|h| h.sent_at).collect::<Vec<_>>()),
        mib(sent_bytes),
        statuses(&errors)
    );
    let mut answers = BTreeMap::new();
    for h in &held {
        if let Some((_, a)) = &h.answer {
            *answers.entry(a.clone()).or_default() += 1;
        }
    }
    let answered: Vec<Duration> = held
        .iter()
        .filter_map(|h| h.answer.as_ref().map(|a| a.0))
        .collect();
    let closed: Vec<Duration> = held
        .iter()
        .filter_map(|h| h.closed.as_ref().map(|c| c.0))
        .collect();
    let mut close_kinds = BTreeMap::new();
    for h in &held {
        if let Some((_, k)) = &h.closed {
            *close_kinds.entry(k.clone()).or_default() += 1;
        }
    }
    println!(
        "[{tag}] server answered {}/{n} (at {} after the start): {}",
        answered.len(),
        secs_range(&answered),
        statuses(&answers)
    );
    println!(
        "[{tag}] server closed {}/{n} (at {} after the start): {}; the others were still open when the probe let go at {:.1} s",
        closed.len(),
        secs_range(&closed),
        statuses(&close_kinds),
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "[{tag}] 2 s after the probe closed them: {}; gateway {}",
        gw.mem(),
        gw.state()
    );
    gw.check_alive();
}

/// HTTP/2 connection preface plus an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

async fn idle_connections(o: &Opts) {
    let limit = open_files_limit("self").unwrap_or(1024);
    let room = limit.saturating_sub(300) as usize;
    let want_raw = o.n(2000) as usize;
    let want_h2 = o.n(200) as usize;
    let raw_n = want_raw.min(room);
    let h2_n = want_h2.min(room - raw_n);
    if raw_n < want_raw || h2_n < want_h2 {
        println!(
            "note: the open-files limit of this process is {limit}; capped to {raw_n} + {h2_n} connections"
        );
    }
    println!(
        "\n-- 3c. {raw_n} idle TCP connections that send nothing, and {h2_n} that send only the HTTP/2 preface + SETTINGS (open-files limit {limit})"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::sqlite(&dir).await;
    println!(
        "[3c] gateway open-files limit {}; before: {}",
        open_files_limit(&gw.pid().to_string()).map_or("?".into(), |l| l.to_string()),
        gw.mem()
    );
    /// (closed at, how; first answer)
    type Seen = Arc<Mutex<(Option<(Duration, String)>, Option<String>)>>;
    let t0 = Instant::now();
    let mut conns: Vec<(bool, Seen, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut connect_errors = BTreeMap::new();
    for i in 0..raw_n + h2_n {
        let h2 = i >= raw_n;
        let s = match tcp(gw.addr, None).await {
            Ok(s) => s,
            Err(e) => {
                *connect_errors.entry(format!("{:?}", e.kind())).or_default() += 1;
                continue;
            }
        };
        let seen: Seen = Arc::default();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut s = s;
                if h2 && s.write_all(H2_PREFACE).await.is_err() {
                    seen.lock().unwrap().0 = Some((t0.elapsed(), "write failed".into()));
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => {
                            seen.lock().unwrap().0 = Some((t0.elapsed(), "EOF".into()));
                            return;
                        }
                        Ok(n) => {
                            let mut g = seen.lock().unwrap();
                            if g.1.is_none() {
                                g.1 = Some(if h2 {
                                    "HTTP/2 frames".into()
                                } else {
                                    String::from_utf8_lossy(&buf[..n])
                                        .lines()
                                        .next()
                                        .unwrap_or("")
                                        .to_owned()
                                });
                            }
                        }
                        Err(e) => {
                            seen.lock().unwrap().0 =
                                Some((t0.elapsed(), format!("{:?}", e.kind())));
                            return;
                        }
                    }
                }
            })
        };
        conns.push((h2, seen, task));
    }
    println!(
        "[3c] opened {} connections in {:.1} s; connect errors: {}; {}",
        conns.len(),
        t0.elapsed().as_secs_f64(),
        statuses(&connect_errors),
        gw.mem()
    );
    let mut checkpoints: Vec<u64> = [5, 30, 65]
        .into_iter()
        .filter(|&c| c <= o.idle_max)
        .collect();
    if checkpoints.is_empty() {
        checkpoints.push(o.idle_max);
    }
    for c in checkpoints {
        let at = t0 + Duration::from_secs(c);
        tokio::time::sleep_until(at.into()).await;
        for (kind, h2) in [("idle TCP", false), ("HTTP/2 preface only", true)] {
            let mine: Vec<_> = conns.iter().filter(|x| x.0 == h2).collect();
            if mine.is_empty() {
                continue;
            }
            let mut open = 0;
            let mut how = BTreeMap::new();
            let mut answers = BTreeMap::new();
            for (_, seen, _) in &mine {
                let g = seen.lock().unwrap();
                match &g.0 {
                    None => open += 1,
                    Some((_, k)) => *how.entry(k.clone()).or_default() += 1,
                }
                if let Some(a) = &g.1 {
                    *answers.entry(a.clone()).or_default() += 1;
                }
            }
            println!(
                "[3c] after {c:>2} s: {kind}: {open}/{} still open; closed by the server: {}; answers seen: {}",
                mine.len(),
                statuses(&how),
                statuses(&answers)
            );
        }
        println!("[3c] after {c:>2} s: {}; gateway {}", gw.mem(), gw.state());
    }
    for (_, _, t) in &conns {
        t.abort();
    }
    drop(conns);
    gw.check_alive();
}

async fn scenario3(o: &Opts) {
    println!("\n== 3. bodies before auth, idle connections");
    held_bodies(o, false).await;
    held_bodies(o, true).await;
    idle_connections(o).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Samples piling up with no scrape

async fn scenario4(o: &Opts) {
    let n = o.n(200_000);
    println!("\n== 4. {n} GET /health with no scrape of /metrics in between");
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::sqlite(&dir).await;
    let before = gw.mem();
    println!("[4] before: {before}");
    let d = drive(
        gw.addr,
        o.connections,
        n,
        Instant::now() + o.budget,
        Arc::new(|_| get("/health")),
    )
    .await;
    gw.check_alive();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gw.mem();
    println!(
        "[4] sent {} requests in {:.1} s ({:.0}/s); statuses {}",
        d.count(),
        d.elapsed.as_secs_f64(),
        d.count() as f64 / d.elapsed.as_secs_f64(),
        statuses(&d.statuses)
    );
    println!(
        "[4] after, no scrape: {after}; growth {:+.1} MiB",
        (after.rss as f64 - before.rss as f64) / 1024.0
    );
    let t = Instant::now();
    match fetch(gw.addr, None, get("/metrics")).await {
        Ok((s, body)) => println!(
            "[4] one GET /metrics: {s}, {} bytes, rendered in {:.2} s",
            body.len(),
            t.elapsed().as_secs_f64()
        ),
        Err(e) => println!("[4] GET /metrics failed: {e}"),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("[4] after the scrape: {}", gw.mem());
}

// ---------------------------------------------------------------------------------------------
// 5. Poison message

struct Tenant {
    api_key: String,
    api_secret: String,
    device: String,
}

fn cli_json(args: &[&str], db_url: &str, key: &str) -> serde_json::Value {
    let out = Command::new(GATEWAY)
        .args(args)
        .args(["--json", "--database-url", db_url, "--master-key", key])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the wagate CLI");
    assert!(
        out.status.success(),
        "wagate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("CLI JSON")
}

/// A project without practical rate limit or quota, and one device, via the CLI.
fn tenant(db_url: &str, key: &str, name: &str, code: &str) -> Tenant {
    let big = (i64::MAX / 4).to_string();
    let p = cli_json(
        &[
            "project",
            "create",
            "--name",
            name,
            "--rate-limit-per-minute",
            &big,
            "--monthly-quota",
            &big,
        ],
        db_url,
        key,
    );
    let project = p["project_id"].as_str().expect("project_id");
    let d = cli_json(
        &["device", "create", "--project", project, "--code", code],
        db_url,
        key,
    );
    Tenant {
        api_key: p["api_key"].as_str().expect("api_key").into(),
        api_secret: p["api_secret"].as_str().expect("api_secret").into(),
        device: d["device_code"].as_str().expect("device_code").into(),
    }
}

fn signed_send(t: &Tenant, body: &'static str) -> Arc<dyn Fn(u64) -> Req + Send + Sync> {
    let ts = client::unix_now();
    let sig = client::rk_signature(&t.api_key, &t.api_secret, &ts, body.as_bytes());
    let (key, device) = (t.api_key.clone(), t.device.clone());
    Arc::new(move |_| {
        request(
            "POST",
            "/api/v1/send",
            &[
                ("content-type", "application/json"),
                ("x-api-key", &key),
                ("x-device-code", &device),
                ("x-timestamp", &ts),
                ("x-signature", &sig),
            ],
            Bytes::from_static(body.as_bytes()),
        )
    })
}

fn print_b(label: &str, what: &str, d: &Driven) {
    println!(
        "[5 {label}] {what}: B accepted {:.0}/s ({} in {:.1} s), p50 {:.2} ms, p99 {:.2} ms; B statuses {}",
        d.ok() as f64 / d.elapsed.as_secs_f64(),
        d.ok(),
        d.elapsed.as_secs_f64(),
        pct(&d.lat_us, 0.5),
        pct(&d.lat_us, 0.99),
        statuses(&d.statuses)
    );
}

async fn poison(label: &str, db_url: &str, o: &Opts) {
    let key = new_key();
    let a = tenant(db_url, &key, "tenant-a", "RK-A");
    let b = tenant(db_url, &key, "tenant-b", "RK-B");
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(db_url, &key, &dir.path().join("gateway.log")).await;
    let conns = o.connections.clamp(16, 32);
    let window = Duration::from_secs(o.seconds);
    println!(
        "[5 {label}] tenant B: {conns} connections at full speed for {} s; tenant A: one message with U+0000 every 10 ms (own connection each)",
        o.seconds
    );
    let reference = drive(
        gw.addr,
        conns,
        u64::MAX,
        Instant::now() + window,
        signed_send(&b, BODY),
    )
    .await;
    print_b(label, "reference, B alone", &reference);
    let warned = gw.log_count("accept batch failed");

    let make_a = signed_send(&a, POISON);
    let addr = gw.addr;
    let until = Instant::now() + window;
    let a_task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        let mut calls = tokio::task::JoinSet::new();
        while Instant::now() < until {
            ticks.tick().await;
            let req = make_a(0);
            calls.spawn(async move {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(30), fetch(addr, None, req)).await {
                    Ok(Ok((s, body))) => {
                        let text = String::from_utf8_lossy(&body);
                        let code = text
                            .find("\"code\":\"")
                            .map(|i| text[i + 8..].split('"').next().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        (format!("{s} {code}").trim().to_owned(), t.elapsed())
                    }
                    Ok(Err(e)) => (short(&e), t.elapsed()),
                    Err(_) => ("no answer in 30 s".into(), t.elapsed()),
                }
            });
        }
        let mut seen = BTreeMap::new();
        let mut lat = Vec::new();
        while let Some(r) = calls.join_next().await {
            if let Ok((s, d)) = r {
                *seen.entry(s).or_default() += 1u64;
                lat.push(d.as_micros() as u32);
            }
        }
        lat.sort_unstable();
        (seen, lat)
    });
    let with_a = drive(gw.addr, conns, u64::MAX, until, signed_send(&b, BODY)).await;
    print_b(label, "with A's poison messages", &with_a);
    let (a_seen, a_lat) = a_task.await.expect("tenant A");
    println!(
        "[5 {label}] A sent {} (latency p50 {:.1} ms, max {:.1} ms); A statuses {}",
        a_seen.values().sum::<u64>(),
        pct(&a_lat, 0.5),
        pct(&a_lat, 1.0),
        statuses(&a_seen)
    );
    let ref_rate = reference.ok() as f64 / reference.elapsed.as_secs_f64();
    let a_rate = with_a.ok() as f64 / with_a.elapsed.as_secs_f64();
    println!(
        "[5 {label}] B with A = {:.0}% of B alone; gateway log: {} 'accept batch failed' warnings during the run with A; {}",
        100.0 * a_rate / ref_rate.max(1.0),
        gw.log_count("accept batch failed") - warned,
        gw.mem()
    );
    gw.check_alive();
}

async fn scenario5(o: &Opts) {
    println!("\n== 5. poison message (U+0000) from tenant A beside tenant B's load");
    match ScratchPg::from_env(&["WAGATE_BENCH_DATABASE_URL"]) {
        Some(pg) => poison("postgres", &pg.url, o).await,
        None => println!("[5] PostgreSQL part skipped (no WAGATE_BENCH_DATABASE_URL)"),
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hostile.db").to_string_lossy().into_owned();
    poison("sqlite", &db, o).await;
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "wagate hostile-traffic probe: scenarios {:?}, scale {}%, {} connections, hold {} s, idle checks up to {} s, \
             {} s per load window, budget {} s per scenario; {} CPUs; gateway = {GATEWAY} as its own process; loopback only",
            o.only,
            o.scale,
            o.connections,
            o.hold,
            o.idle_max,
            o.seconds,
            o.budget.as_secs(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        for s in o.only.clone() {
            let t = Instant::now();
            match s {
                1 => scenario1(&o).await,
                2 => scenario2(&o).await,
                3 => scenario3(&o).await,
                4 => scenario4(&o).await,
                5 => scenario5(&o).await,
                other => println!("no scenario {other} (1..5)"),
            }
            println!("(scenario {s} took {:.1} s)", t.elapsed().as_secs_f64());
        }
    });
}
