//! Failover benchmark: three `wagate serve` nodes (processes, built with the `simulator`
//! feature) on one PostgreSQL database, N sessions linked over them against wasim (the
//! loopback WhatsApp server, in this process). Prints:
//!
//! - **failover time**: `kill -9` of one node, then the time until every session it owned
//!   reports connected on another node (target: lease TTL + 5 s), with when the victim's
//!   leases expired (read from the database just before the kill: TTL after each lease's
//!   last renewal or claim) and the time from the last expiry to all connected;
//! - **graceful hand-over time**: SIGTERM to one node, then the time until every session it
//!   owned reports connected on another node (target: ≤ 3 s).
//!
//! Each is repeated `--kills` times, on n1, n2, n3 in turn; after each fault the node is
//! started again under the same id and the benchmark **waits for the spread to settle**
//! (every node live, owned counts within one of each other, every session connected) before
//! the next fault, so every victim owns about N / 3 sessions.
//!
//! ```text
//! cargo bench --bench failover --features simulator -- [--sessions 30] [--kills 3] [--ttl 15] [--renew 5] [--concurrency 6]
//! ```
//!
//! `--ttl` is the nodes' `--lease-ttl-secs` (default 15, the product default) and `--renew`
//! their `--lease-renew-secs` (default 5, or a third of `--ttl` when only that is given).
//! "Connected on another node" is read with `GetSession` through a surviving node: state
//! connected, and `owner_node` (the node whose live session answered) neither empty nor the
//! victim. The database is `WAGATE_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; a scratch database is created and dropped).
//! WAGATE_BENCH_LOG is the nodes' RUST_LOG (default `warn`); when set, each node's log is kept
//! in the temp directory as `wagate-bench-failover-<node>.log`.
//!
//! Everything runs on loopback, every wait is bounded, and the node processes are killed
//! when the benchmark ends, fails or panics. It asserts nothing: it prints figures.

// A benchmark panics on a broken setup: unwrap is its assertion.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/process.rs"]
#[allow(dead_code)] // `spawn_gateway` picks its own port; these nodes advertise theirs.
mod process;
use process::{GATEWAY, free_port, spawn_gateway_on, tail};

use common::{ScratchPg, flag};
use futures::StreamExt;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wagate::client;
use wagate::proto::v1::sessions_service_client::SessionsServiceClient;
use wagate::proto::v1::{
    CreateSessionRequest, GetQrCodeRequest, GetSessionRequest, ListSessionsRequest, Session,
    SessionState,
};

const SVC: &str = "/wagate.v1.SessionsService/";
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// How often the benchmark looks at the victim's sessions after a fault.
const POLL: Duration = Duration::from_millis(100);

struct Opts {
    sessions: usize,
    kills: usize,
    ttl: u64,
    renew: u64,
    concurrency: usize,
    /// The operator token every node is started with (`--admin-token`) and this process uses.
    token: String,
}

fn opts() -> Opts {
    let ttl = flag("--ttl", 15).clamp(2, 600);
    let renew_default = if ttl == 15 { 5 } else { (ttl / 3).max(1) };
    Opts {
        sessions: flag("--sessions", 30).clamp(3, 600) as usize,
        kills: flag("--kills", 3).clamp(1, 20) as usize,
        ttl,
        renew: flag("--renew", renew_default).clamp(1, ttl / 2),
        concurrency: flag("--concurrency", 6).clamp(1, 64) as usize,
        token: std::env::var("WAGATE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| hex::encode(wagate::crypto::random_bytes::<16>())),
    }
}

type Sessions = SessionsServiceClient<tonic::transport::Channel>;

/// One node process; killed (SIGKILL) when dropped, so a failing or panicking benchmark
/// never leaves it behind.
struct Node {
    id: String,
    addr: SocketAddr,
    base: String,
    db_url: String,
    key: String,
    extra: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(id: &str, db_url: &str, key: &str, ws_url: &str, o: &Opts, log: PathBuf) -> Node {
        let addr = free_port();
        let base = format!("http://{addr}");
        let extra = [
            "--whatsapp-url",
            ws_url,
            "--node-id",
            id,
            "--advertise-url",
            &base,
            "--lease-ttl-secs",
            &o.ttl.to_string(),
            "--lease-renew-secs",
            &o.renew.to_string(),
            "--admin-token",
            &o.token,
            // Three nodes share a PostgreSQL server other work may use too.
            "--db-pool-size",
            "6",
        ]
        .map(String::from)
        .to_vec();
        let _ = std::fs::remove_file(&log);
        Node {
            id: id.to_owned(),
            addr,
            base,
            db_url: db_url.to_owned(),
            key: key.to_owned(),
            extra,
            log,
            child: None,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} already runs", self.id);
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = Some(spawn_gateway_on(
            self.addr,
            &self.db_url,
            &self.key,
            &extra,
            &self.log,
        ));
    }

    /// The process's exit status once it has ended (and then it is reaped).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    fn check_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "node {} exited with {status}; its log:\n{}",
                self.id,
                tail(&self.log)
            );
        }
    }

    /// Waits until the node answers `/ready`, at most `secs`; returns how long that took.
    async fn ready(&mut self, http: &reqwest::Client, secs: u64) -> Duration {
        let t0 = Instant::now();
        loop {
            self.check_alive();
            if let Ok(r) = http.get(format!("{}/ready", self.base)).send().await
                && r.status().is_success()
            {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "node {} not ready within {secs} s; its log:\n{}",
                self.id,
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL; the instant just before the signal.
    fn kill9(&mut self) -> Instant {
        let mut c = self.child.take().expect("running");
        let t0 = Instant::now();
        let _ = c.kill();
        let _ = c.wait();
        t0
    }

    /// SIGTERM (the process is left to stop by itself, see `exited`); the instant just before
    /// the signal.
    fn term(&mut self) -> Instant {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let t0 = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {}", self.id);
        t0
    }

    /// Waits (at most `secs`) for the process to end after SIGTERM; kills it after that.
    async fn wait_exit(&mut self, secs: u64) {
        let t0 = Instant::now();
        while self.child.is_some() {
            if self.exited().is_some() {
                return;
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                eprintln!(
                    "node {} did not stop within {secs} s of SIGTERM; killing it",
                    self.id
                );
                self.kill9();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A gRPC client of a node (it answers already: see `Node::ready`).
async fn grpc(base: &str) -> Sessions {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tonic::transport::Channel::from_shared(base.to_owned())
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => return SessionsServiceClient::new(ch),
            Err(e) => assert!(Instant::now() < deadline, "gRPC to {base}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Clone)]
struct Project {
    api_key: String,
    api_secret: String,
}

fn signed<T: Message>(p: &Project, method: &str, msg: T) -> tonic::Request<T> {
    let ts = client::unix_now();
    let path = format!("{SVC}{method}");
    let sig = client::grpc_signature(&p.api_key, &p.api_secret, &ts, &path, &msg.encode_to_vec());
    let mut req = tonic::Request::new(msg);
    req.set_timeout(Duration::from_secs(10));
    let md = req.metadata_mut();
    md.insert("x-api-key", p.api_key.parse().unwrap());
    md.insert("x-timestamp", ts.parse().unwrap());
    md.insert("x-signature", sig.parse().unwrap());
    req
}

/// `wagate project create --json` on the benchmark's database.
fn create_project(db_url: &str, key: &str, max_sessions: usize) -> Project {
    let out = Command::new(GATEWAY)
        .args(["project", "create", "--json", "--name", "bench-failover"])
        .args(["--max-sessions", &max_sessions.to_string()])
        .args(["--database-url", db_url, "--master-key", key])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("wagate project create");
    assert!(
        out.status.success(),
        "wagate project create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("project JSON");
    Project {
        api_key: v["api_key"].as_str().expect("api_key").into(),
        api_secret: v["api_secret"].as_str().expect("api_secret").into(),
    }
}

async fn get_session(c: &mut Sessions, p: &Project, id: &str) -> Option<Session> {
    c.get_session(signed(
        p,
        "GetSession",
        GetSessionRequest {
            session_id: id.to_owned(),
        },
    ))
    .await
    .ok()?
    .into_inner()
    .session
}

/// Creates one session on the node `c` talks to, has wasim's phone `phone` scan its QR and
/// waits until it reports connected. Returns its id.
async fn link(
    mut c: Sessions,
    p: &Project,
    admin: &wasim::client::Admin,
    i: usize,
    phone: String,
) -> String {
    let s = c
        .create_session(signed(
            p,
            "CreateSession",
            CreateSessionRequest {
                name: format!("bench-{i}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("CreateSession {i}: {e}"))
        .into_inner()
        .session
        .expect("session");
    let id = s.session_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    let qr = loop {
        let q = c
            .get_qr_code(signed(
                p,
                "GetQrCode",
                GetQrCodeRequest {
                    session_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("GetQrCode {i}: {e}"))
            .into_inner();
        if !q.qr_code.is_empty() {
            break q.qr_code;
        }
        assert!(Instant::now() < deadline, "no QR for session {i} in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    admin
        .scan(&qr, &phone)
        .await
        .unwrap_or_else(|e| panic!("scan for session {i}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = get_session(&mut c, p, &id).await;
        if s.as_ref()
            .is_some_and(|s| s.state == SessionState::Connected as i32)
        {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "session {i} not connected 60 s after the scan ({s:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node in `GET /api/v1/cluster`.
#[derive(Debug)]
struct NodeView {
    id: String,
    state: String,
    owned: i64,
}

async fn cluster_view(http: &reqwest::Client, base: &str, token: &str) -> Option<Vec<NodeView>> {
    let r = http
        .get(format!("{base}/api/v1/cluster"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    Some(
        v["data"]["nodes"]
            .as_array()?
            .iter()
            .map(|n| NodeView {
                id: n["nodeId"].as_str().unwrap_or_default().to_owned(),
                state: n["state"].as_str().unwrap_or_default().to_owned(),
                owned: n["sessionsOwned"].as_i64().unwrap_or(0),
            })
            .collect(),
    )
}

/// Every session of the project with the node whose live session answered (empty: none).
async fn owners(c: &mut Sessions, p: &Project) -> Option<Vec<Session>> {
    Some(
        c.list_sessions(signed(p, "ListSessions", ListSessionsRequest::default()))
            .await
            .ok()?
            .into_inner()
            .sessions,
    )
}

/// Waits (at most `secs`) until every node is live, the owned counts are within one of each
/// other and sum to `n`, and every session reports connected on some node. Returns how long
/// that took and the counts, or `None` when it did not settle in time.
async fn settle(
    http: &reqwest::Client,
    token: &str,
    nodes: &mut [Node],
    p: &Project,
    n: usize,
    secs: u64,
) -> Option<(Duration, Vec<i64>)> {
    let t0 = Instant::now();
    let mut c = grpc(&nodes[0].base).await;
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        for node in nodes.iter_mut() {
            node.check_alive();
        }
        if let Some(view) = cluster_view(http, &nodes[0].base, token).await {
            let counts: Vec<i64> = NODES
                .iter()
                .map(|id| {
                    view.iter()
                        .find(|v| v.id == *id && v.state == "live")
                        .map_or(-1, |v| v.owned)
                })
                .collect();
            let (max, min) = (*counts.iter().max().unwrap(), *counts.iter().min().unwrap());
            last = format!("owned {counts:?}");
            let even = min >= 0 && max - min <= 1 && counts.iter().sum::<i64>() == n as i64;
            if even && let Some(all) = owners(&mut c, p).await {
                let up = all
                    .iter()
                    .filter(|s| {
                        s.state == SessionState::Connected as i32 && !s.owner_node.is_empty()
                    })
                    .count();
                last = format!("owned {counts:?}, {up}/{n} connected");
                if up == n && all.len() == n {
                    return Some((t0.elapsed(), counts));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("the spread did not settle within {secs} s (last seen: {last})");
    None
}

/// When the first and the last lease `node` holds expire, from now (database clock).
fn lease_expiry(db_url: &str, node: &str) -> Option<(Duration, Duration)> {
    use diesel::sql_types::{BigInt, Nullable, Text};
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Left {
        #[diesel(sql_type = Nullable<BigInt>)]
        first: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        last: Option<i64>,
    }
    let mut c = diesel::PgConnection::establish(db_url).ok()?;
    let l: Left = diesel::sql_query(
        "SELECT min(expires_at) - n.now AS first, max(expires_at) - n.now AS last \
         FROM session_leases, \
         (SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS now) n \
         WHERE owner = $1 GROUP BY n.now",
    )
    .bind::<Text, _>(node)
    .get_result(&mut c)
    .ok()?;
    let ms = |v: Option<i64>| Duration::from_millis(v.unwrap_or(0).max(0) as u64);
    Some((ms(l.first), ms(l.last)))
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Term,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Term => "SIGTERM",
        }
    }
}

/// What one fault measured.
struct Round {
    /// Fault to the last of the victim's sessions connected elsewhere; `None`: not within
    /// the bound.
    all: Option<Duration>,
    first: Option<Duration>,
    owned: usize,
    /// kill -9: when the first and the last of the victim's leases expired, after the kill.
    expiry: Option<(Duration, Duration)>,
    /// SIGTERM: when the process had exited.
    exited: Option<Duration>,
}

/// Applies `fault` to `nodes[victim]` and times its sessions' move to the other nodes.
async fn fault_round(
    fault: Fault,
    victim: usize,
    nodes: &mut [Node],
    p: &Project,
    db_url: &str,
    o: &Opts,
) -> Round {
    let victim_id = nodes[victim].id.clone();
    let survivors: Vec<usize> = (0..nodes.len()).filter(|i| *i != victim).collect();
    let mut clients = Vec::new();
    for &i in &survivors {
        clients.push(grpc(&nodes[i].base).await);
    }
    let owned: Vec<String> = owners(&mut clients[0], p)
        .await
        .expect("ListSessions")
        .into_iter()
        .filter(|s| s.owner_node == victim_id)
        .map(|s| s.session_id)
        .collect();
    // A lease expires TTL after its last renewal or its claim, whichever is later: read
    // from the database just before the fault (a renewal in the few ms between is unlikely).
    let read = Instant::now();
    let leases = lease_expiry(db_url, &victim_id);
    let t0 = match fault {
        Fault::Kill => nodes[victim].kill9(),
        Fault::Term => nodes[victim].term(),
    };
    let gap = t0 - read;
    let expiry = leases
        .filter(|_| fault == Fault::Kill)
        .map(|(a, b)| (a.saturating_sub(gap), b.saturating_sub(gap)));
    // Bounded: a hand-over that does not happen still ends with the lease expiring.
    let bound = Duration::from_secs(o.ttl * 2 + 60);
    let mut pending: Vec<String> = owned.clone();
    let mut first = None;
    let mut all = None;
    let mut exited = None;
    let mut round = 0usize;
    while t0.elapsed() < bound {
        if fault == Fault::Term && exited.is_none() && nodes[victim].exited().is_some() {
            exited = Some(t0.elapsed());
        }
        let looks = pending.iter().enumerate().map(|(k, id)| {
            let mut c = clients[(k + round) % clients.len()].clone();
            async move { get_session(&mut c, p, id).await }
        });
        let seen = futures::future::join_all(looks).await;
        let at = t0.elapsed();
        let moved: HashSet<String> = seen
            .into_iter()
            .flatten()
            .filter(|s| {
                s.state == SessionState::Connected as i32
                    && !s.owner_node.is_empty()
                    && s.owner_node != victim_id
            })
            .map(|s| s.session_id)
            .collect();
        if !moved.is_empty() && first.is_none() {
            first = Some(at);
        }
        pending.retain(|id| !moved.contains(id));
        if pending.is_empty() {
            all = Some(at);
            break;
        }
        round += 1;
        for &i in &survivors {
            nodes[i].check_alive();
        }
        tokio::time::sleep(POLL).await;
    }
    if all.is_none() {
        let mut c = clients[0].clone();
        let mut states = Vec::new();
        for id in &pending {
            states.push(get_session(&mut c, p, id).await.map(|s| {
                format!(
                    "{}: state {} owner {:?} {}",
                    s.session_id, s.state, s.owner_node, s.reason
                )
            }));
        }
        eprintln!(
            "{} {victim_id}: {}/{} sessions still not connected elsewhere after {} s: {states:?}",
            fault.label(),
            pending.len(),
            owned.len(),
            bound.as_secs()
        );
        for &i in &survivors {
            eprintln!("log of {}:\n{}", nodes[i].id, tail(&nodes[i].log));
        }
    }
    if fault == Fault::Term {
        nodes[victim].wait_exit(30).await;
        if exited.is_none() {
            exited = Some(t0.elapsed());
        }
    }
    Round {
        all,
        first,
        owned: owned.len(),
        expiry,
        exited,
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// (min, median, max); a missing figure (not within the bound) counts as the largest.
fn stats(v: &[Option<Duration>]) -> Option<(Duration, Duration, Duration)> {
    let mut s: Vec<Duration> = v.iter().map(|d| d.unwrap_or(Duration::MAX)).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_unstable();
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 1 {
        s[mid]
    } else if s[mid] == Duration::MAX {
        Duration::MAX
    } else {
        (s[mid - 1] + s[mid]) / 2
    };
    Some((s[0], median, s[s.len() - 1]))
}

fn fmt_d(d: Duration) -> String {
    if d == Duration::MAX {
        "timeout".into()
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn summary(label: &str, v: &[Option<Duration>], target: Duration, target_label: &str) {
    let Some((min, median, max)) = stats(v) else {
        return;
    };
    println!(
        "SUMMARY {label}: min {} / median {} / max {} over {} runs [target {target_label}: median {}, max {}]",
        fmt_d(min),
        fmt_d(median),
        fmt_d(max),
        v.len(),
        if median <= target { "met" } else { "MISSED" },
        if max <= target { "met" } else { "MISSED" },
    );
}

async fn run(pg: &ScratchPg, o: &Opts, token: &str) {
    let n = o.sessions;
    let sim = wasim::Server::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("wasim");
    let admin = wasim::client::Admin::new(sim.addr());
    let ws_url = sim.ws_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_of = |id: &str| match std::env::var("WAGATE_BENCH_LOG") {
        Ok(_) => std::env::temp_dir().join(format!("wagate-bench-failover-{id}.log")),
        Err(_) => dir.path().join(format!("{id}.log")),
    };
    let key = hex::encode(wagate::crypto::random_bytes::<32>());
    let project = create_project(&pg.url, &key, n + 10);

    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|id| Node::new(id, &pg.url, &key, &ws_url, o, log_of(id)))
        .collect();
    for node in nodes.iter_mut() {
        node.spawn();
    }
    for node in nodes.iter_mut() {
        node.ready(&http, 60).await;
    }

    // Link N sessions, each created on one node in turn (the creating node runs it).
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(grpc(&node.base).await);
    }
    let t0 = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..n)
        .map(|i| {
            link(
                clients[i % clients.len()].clone(),
                &project,
                &admin,
                i,
                format!("1555031{i:04}"),
            )
        })
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    println!(
        "linked {} sessions over {} nodes in {:.1} s ({} at a time)",
        ids.len(),
        nodes.len(),
        t0.elapsed().as_secs_f64(),
        o.concurrency
    );
    drop(clients);
    let settled = settle(&http, token, &mut nodes, &project, n, 120).await;
    println!(
        "spread after linking: {}",
        settled.map_or("did not settle in 120 s".into(), |(d, c)| format!(
            "owned {c:?}, settled {:.1} s after the last link",
            d.as_secs_f64()
        ))
    );
    // whatsapp-rust sometimes reconnects right after pairing (wasim's README): what linking
    // left behind is the baseline of the overlap count below.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pair = |v: &wasim::conns::Overlap| (v.first, v.second);
    let baseline: HashSet<(u64, u64)> = admin
        .connection_overlaps(None)
        .await
        .map(|v| v.iter().map(pair).collect())
        .unwrap_or_default();

    let mut results: HashMap<&'static str, Vec<Option<Duration>>> = HashMap::new();
    // kill -9: from the last of the victim's leases expiring to all its sessions connected.
    let mut since_expiry: Vec<Option<Duration>> = Vec::new();
    for fault in [Fault::Kill, Fault::Term] {
        for k in 0..o.kills {
            let victim = k % nodes.len();
            let id = nodes[victim].id.clone();
            let r = fault_round(fault, victim, &mut nodes, &project, &pg.url, o).await;
            let due = match r.expiry {
                Some((first, last)) => format!(
                    "; its leases expired {:.2}-{:.2} s after the kill (database clock)",
                    first.as_secs_f64(),
                    last.as_secs_f64()
                ),
                None => String::new(),
            };
            let exited = match fault {
                Fault::Term => format!("; the process exited after {}", secs(r.exited)),
                Fault::Kill => String::new(),
            };
            let after_expiry = match (r.expiry, r.all) {
                (Some((_, last)), Some(all)) => {
                    let d = all.saturating_sub(last);
                    since_expiry.push(Some(d));
                    format!(" ({:.2} s after the last lease expired)", d.as_secs_f64())
                }
                _ => String::new(),
            };
            println!(
                "[{} #{}] {id} owned {} sessions{due}{exited}: first connected on another node after {}, all {} after {}{after_expiry}",
                fault.label(),
                k + 1,
                r.owned,
                secs(r.first),
                r.owned,
                secs(r.all),
            );
            results.entry(fault.label()).or_default().push(r.all);

            // Start it again under the same id; wait for the spread to settle.
            let t0 = Instant::now();
            nodes[victim].spawn();
            let ready = nodes[victim].ready(&http, o.ttl * 2 + 60).await;
            let settled = settle(&http, token, &mut nodes, &project, n, 240).await;
            println!(
                "    {id} started again: ready after {:.2} s; {}",
                ready.as_secs_f64(),
                settled.map_or("spread did not settle in 240 s".into(), |(_, c)| format!(
                    "spread settled at {c:?} {:.1} s after the restart",
                    t0.elapsed().as_secs_f64()
                ))
            );
        }
    }

    let overlaps = admin.connection_overlaps(None).await.map(|v| {
        v.iter()
            .filter(|o| !baseline.contains(&pair(o)))
            .map(|o| o.device.clone())
            .collect::<Vec<_>>()
    });
    match overlaps {
        Ok(v) => println!(
            "wasim: {} new overlaps (a device with two connections in use at once) during the faults{}",
            v.len(),
            if v.is_empty() {
                String::new()
            } else {
                format!(": {v:?}")
            }
        ),
        Err(e) => println!("wasim overlaps: {e}"),
    }

    let ttl = Duration::from_secs(o.ttl);
    summary(
        &format!(
            "failover (kill -9, lease TTL {} s, renew {} s, N={n} over 3 nodes)",
            o.ttl, o.renew
        ),
        &results[Fault::Kill.label()],
        ttl + Duration::from_secs(5),
        &format!("<= TTL + 5 s = {} s", o.ttl + 5),
    );
    if let Some((min, median, max)) = stats(&since_expiry) {
        println!(
            "SUMMARY failover, from the last lease expiring to all connected (claim at the next \
             balancing, at most 1 s, then the login): min {} / median {} / max {}",
            fmt_d(min),
            fmt_d(median),
            fmt_d(max)
        );
    }
    summary(
        &format!("graceful hand-over (SIGTERM, N={n} over 3 nodes)"),
        &results[Fault::Term.label()],
        Duration::from_secs(3),
        "<= 3 s",
    );
    for node in nodes.iter_mut() {
        if node.child.is_some() {
            node.term();
        }
    }
    for node in nodes.iter_mut() {
        node.wait_exit(30).await;
    }
    drop(nodes);
    sim.shutdown().await;
}

fn main() {
    let o = opts();
    // This process's HTTP client (the cluster view).
    wagate::webhooks::http::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "wagate failover benchmark: N = {} sessions over 3 nodes (processes), {} runs of each \
         fault, lease TTL {} s / renew {} s{}, {} CPUs, loopback, wasim in-process, PostgreSQL",
        o.sessions,
        o.kills,
        o.ttl,
        o.renew,
        if o.ttl == 15 && o.renew == 5 {
            " (the defaults)"
        } else {
            ""
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let admin_url =
        std::env::var("WAGATE_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned());
    let pg = ScratchPg::at(&admin_url);
    rt.block_on(run(&pg, &o, &o.token));
}
