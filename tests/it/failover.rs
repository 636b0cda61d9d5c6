//! Faults of whole nodes, with real processes on one PostgreSQL and wasim: `kill -9`,
//! `SIGSTOP` past the lease TTL, a node cut off from its database while WhatsApp stays
//! reachable, a node joining, a rolling restart. Throughout, messages go in through REST on
//! every live node; at the end every accepted message reached its recipient exactly once
//! and wasim saw no two connections of one device in use at once.
//!
//! The nodes are this test binary itself, started with `--ignored --exact
//! failover::node_process` and their configuration in `WAGATE_IT_NODE`: the real `launch`
//! in a process of its own, so signals do to it what they do to `wagate serve`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use wagate::crypto::MasterKey;
use wagate::domain::admin::{Admin, NewProject};
use wagate::storage::Db;

use crate::support::{TestDb, TestProject, eventually, read};

const NODE_ENV: &str = "WAGATE_IT_NODE";
/// Lease TTL of the nodes here (renewed every second).
const TTL: Duration = Duration::from_secs(3);

#[derive(Serialize, Deserialize)]
struct NodeConfig {
    node: String,
    port: u16,
    database_url: String,
    key_hex: String,
    ws_url: String,
    sim_addr: std::net::SocketAddr,
    moves_per_minute: u32,
}

/// Not a test: the entry of a node process the fault tests start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the entry of a node process that the fault tests start"]
async fn node_process() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let cfg: NodeConfig =
        serde_json::from_str(&std::env::var(NODE_ENV).expect("started by a fault test"))
            .expect("node configuration");
    let connector = wagate::sessions::Connector {
        transport: Arc::new(wasim::client::transport_factory(&cfg.ws_url)),
        http: Arc::new(wasim::client::SimHttpClient::new(cfg.sim_addr)),
        version: Some(wasim::client::CLIENT_VERSION),
    };
    let mut settings = crate::cluster::node_settings(&cfg.node, cfg.moves_per_minute);
    settings.cluster.lease_ttl = TTL;
    settings.cluster.balance_interval = Duration::from_millis(250);
    let listener = TcpListener::bind(("127.0.0.1", cfg.port))
        .await
        .expect("node port");
    let server = wagate::app::launch(
        wagate::app::LaunchConfig {
            connector: Some(connector),
            database_url: cfg.database_url,
            master_key: MasterKey::parse(&cfg.key_hex).unwrap(),
            settings,
            db_pool_size: 6,
            writer: None,
        },
        listener,
    )
    .await
    .expect("node starts");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    term.recv().await;
    server.shutdown().await;
}

/// A node process.
struct Node {
    id: String,
    cfg: String,
    base: String,
    child: Option<std::process::Child>,
}

impl Node {
    fn start(id: &str, cfg: NodeConfig) -> Node {
        let base = format!("http://127.0.0.1:{}", cfg.port);
        let mut n = Node {
            id: id.to_owned(),
            cfg: serde_json::to_string(&cfg).unwrap(),
            base,
            child: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(std::env::temp_dir().join(format!(
            "wagate-it-{}-{}.log",
            self.id,
            std::process::id()
        )))
        .unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "failover::node_process",
                "--nocapture",
            ])
            .env(NODE_ENV, &self.cfg)
            .env("RUST_LOG", "warn,wagate=info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.child = Some(child);
    }

    async fn ready(&self) {
        let http = reqwest::Client::new();
        eventually(30, &format!("{} to answer /ready", self.id), || async {
            http.get(format!("{}/ready", self.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.id);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for the process to end (its graceful shutdown).
    async fn terminate(&mut self) {
        self.signal("TERM");
        let mut c = self.child.take().unwrap();
        let done = tokio::task::spawn_blocking(move || c.wait()).await.unwrap();
        assert!(done.is_ok());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy in front of PostgreSQL that the test can cut: the cut drops every
/// connection through it and refuses new ones until restored.
struct DbProxy {
    port: u16,
    open: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl DbProxy {
    async fn start(upstream: std::net::SocketAddr) -> DbProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let (o, g) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        DbProxy {
            port,
            open,
            generation,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Sends messages continuously through every live node until stopped; keeps the ids of
/// the accepted ones.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(String, String)>>,
}

impl Traffic {
    fn start(
        bases: Arc<std::sync::Mutex<Vec<String>>>,
        routes: Vec<(TestProject, String)>,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut accepted = Vec::new();
            let mut i = 0usize;
            // Bounded: at most 2,000 messages, 10 a second.
            while !s.load(Ordering::SeqCst) && i < 2_000 {
                let nodes = bases.lock().unwrap().clone();
                let base = &nodes[i % nodes.len()];
                let (p, to) = &routes[i % routes.len()];
                let body = json!({"recipient": to, "message": format!("m{i}")}).to_string();
                let ts = wagate::client::unix_now();
                let sig =
                    wagate::client::rk_signature(&p.api_key, &p.api_secret, &ts, body.as_bytes());
                let r = http
                    .post(format!("{base}/api/v1/send"))
                    .header("X-API-KEY", &p.api_key)
                    .header("X-DEVICE-CODE", &p.device_code)
                    .header("X-TIMESTAMP", ts)
                    .header("X-SIGNATURE", sig)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status().as_u16() == 201
                {
                    let (_, b) = read(r).await;
                    let id = b["data"]["id"].as_str().unwrap().to_owned();
                    accepted.push((id, p.api_key.clone()));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            accepted
        });
        Traffic { stop, task }
    }

    async fn finish(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// The session owners, read from the operator endpoint of `base`.
async fn owners(base: &str) -> HashMap<String, i64> {
    let (code, v) = read(
        reqwest::Client::new()
            .get(format!("{base}/api/v1/cluster"))
            .header("Authorization", "Bearer operator-secret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "live" || n["state"] == "draining")
        .map(|n| {
            (
                n["nodeId"].as_str().unwrap().to_owned(),
                n["sessionsOwned"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Waits until every session is connected and owned by one of `allowed`.
async fn all_connected_on(
    c: &crate::support::session::Client,
    p: &TestProject,
    ids: &[String],
    allowed: &[&str],
    secs: u64,
    what: &str,
) {
    eventually(secs, what, || async {
        for id in ids {
            let mut c = c.clone();
            let req = crate::support::grpc_signed(
                p,
                "/wagate.v1.SessionsService/GetSession",
                wagate::proto::v1::GetSessionRequest {
                    session_id: id.clone(),
                },
            );
            let s = c.get_session(req).await.ok()?.into_inner().session?;
            if s.state != wagate::proto::v1::SessionState::Connected as i32
                || !allowed.contains(&s.owner_node.as_str())
            {
                return None;
            }
        }
        Some(())
    })
    .await;
}

async fn overlaps(admin_url: &str) -> serde_json::Value {
    let (code, v) = read(
        reqwest::get(format!("{admin_url}/connections/overlaps"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v
}

/// Every fault, one after another, on a cluster of three nodes and six linked sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_fail_and_no_message_is_lost_or_doubled() {
    let Some(db) = TestDb::postgres() else { return };
    // The test's own HTTP clients (the nodes install theirs in `launch`).
    wagate::webhooks::http::install_crypto_provider();
    let sim = wasim::Server::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let wa = wasim::client::Admin::new(sim.addr());
    let key = MasterKey::generate();
    let key_hex = hex::encode(key.derive("test only: not used").as_slice());
    let key = MasterKey::parse(&key_hex).unwrap();
    let store = Db::open(&db.url, 2).unwrap();
    store.migrate().unwrap();
    let admin = Admin::new(store.clone(), key.clone());
    let project = admin
        .create_project(NewProject {
            name: "failover".into(),
            rate_limit_per_minute: 10_000,
            monthly_quota: 1_000_000,
            max_sessions: 20,
        })
        .await
        .unwrap();
    let p = TestProject {
        api_key: project.api_key.clone(),
        api_secret: project.api_secret.clone(),
        project_id: project.project_id.to_string(),
        ..Default::default()
    };

    // The fourth node reaches PostgreSQL through a proxy the test can cut.
    let (pg_host, db_name) = db.url.rsplit_once('/').unwrap();
    let pg_addr: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = DbProxy::start(pg_addr).await;
    let proxied_url = format!(
        "{}/{}",
        pg_host.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port)),
        db_name
    );
    let config = |node: &str, url: &str| NodeConfig {
        node: node.to_owned(),
        port: free_port(),
        database_url: url.to_owned(),
        key_hex: key_hex.clone(),
        ws_url: sim.ws_url(),
        sim_addr: sim.addr(),
        moves_per_minute: 60,
    };
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Node::start(n, config(n, &db.url)))
        .collect();
    for n in &nodes {
        n.ready().await;
    }

    // Six sessions, two created on each node (the creating node takes them).
    let mut ids = Vec::new();
    let mut routes = Vec::new();
    let mut phones = Vec::new();
    for i in 0..6 {
        let base = nodes[i % 3].base.clone();
        let mut c =
            wagate::proto::v1::sessions_service_client::SessionsServiceClient::connect(base)
                .await
                .unwrap();
        let phone = format!("1555013300{i}");
        let s = crate::support::session::link(&mut c, &p, &wa, &format!("s{i}"), &phone).await;
        ids.push(s.session_id.clone());
        phones.push(phone);
        routes.push(p.via(&s));
    }
    // Each session writes to the next one's phone: every message has a live recipient
    // device (a gateway session) that receipts it.
    let routes: Vec<(TestProject, String)> = routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, phones[(i + 1) % 6].clone()))
        .collect();
    // whatsapp-rust sometimes reconnects twice right after pairing (wasim's README): what
    // linking left behind is the baseline, and the faults below must add nothing to it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = overlaps(&sim.admin_url()).await;
    let bases = Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>(),
    ));
    let traffic = Traffic::start(bases.clone(), routes);
    let grpc = |base: String| async move {
        wagate::proto::v1::sessions_service_client::SessionsServiceClient::connect(base)
            .await
            .unwrap()
    };

    // 1. kill -9 n1: its sessions connect on n2 and n3 within TTL + 5 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c2 = grpc(nodes[1].base.clone()).await;
    bases.lock().unwrap().retain(|b| *b != nodes[0].base);
    let t0 = std::time::Instant::now();
    nodes[0].kill9();
    all_connected_on(
        &c2,
        &p,
        &ids,
        &["n2", "n3"],
        TTL.as_secs() + 5 + 10,
        "failover after kill -9 n1",
    )
    .await;
    eprintln!("failover after kill -9: {:?}", t0.elapsed());

    // 2. SIGSTOP n2 for 2 × TTL: its sessions move to n3; resumed, it runs none of them.
    let c3 = grpc(nodes[2].base.clone()).await;
    bases.lock().unwrap().retain(|b| *b != nodes[1].base);
    let leases_of = |node: &'static str| {
        let (store, ids) = (store.clone(), ids.clone());
        async move {
            let mut held = HashMap::new();
            for id in ids {
                let i = id.clone();
                let l = store
                    .run(move |c| wagate::storage::cluster::lease_of(c, &i))
                    .await
                    .unwrap()
                    .unwrap();
                if l.owner.as_deref() == Some(node) {
                    held.insert(id, l.epoch);
                }
            }
            held
        }
    };
    let before_stop = leases_of("n2").await;
    assert!(!before_stop.is_empty(), "n2 runs sessions before the pause");
    nodes[1].signal("STOP");
    all_connected_on(
        &c3,
        &p,
        &ids,
        &["n3"],
        TTL.as_secs() * 2 + 10,
        "n3 takes n2's sessions",
    )
    .await;
    tokio::time::sleep(TTL * 2).await;
    nodes[1].signal("CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Whatever n2 runs now it claimed anew (a rebalance may hand it some), never under the
    // leases it held before the pause.
    for (id, epoch) in leases_of("n2").await {
        if let Some(old) = before_stop.get(&id) {
            assert!(
                epoch > *old,
                "{id}: n2 runs it under epoch {epoch}, it paused with {old}"
            );
        }
    }
    bases.lock().unwrap().push(nodes[1].base.clone());

    // 3. A fourth node joins (through the proxy): sessions move until the spread is even.
    let mut n4 = Node::start("n4", config("n4", &proxied_url));
    n4.ready().await;
    bases.lock().unwrap().push(n4.base.clone());
    eventually(60, "an even spread over n2, n3, n4", || async {
        let o = owners(&nodes[2].base).await;
        let counts: Vec<i64> = ["n2", "n3", "n4"]
            .iter()
            .map(|n| o.get(*n).copied().unwrap_or(0))
            .collect();
        let (max, min) = (*counts.iter().max().unwrap(), *counts.iter().min().unwrap());
        (counts.iter().sum::<i64>() == 6 && max - min <= 1).then_some(())
    })
    .await;

    // 4. n4 loses its database, WhatsApp still reachable: it drops its sessions before its
    // leases expire, the others take them; back online, it rejoins without a restart.
    let n4_before = owners(&nodes[2].base).await.get("n4").copied().unwrap_or(0);
    assert!(n4_before > 0, "n4 runs sessions before the cut");
    bases.lock().unwrap().retain(|b| *b != n4.base);
    proxy.cut();
    all_connected_on(
        &c3,
        &p,
        &ids,
        &["n2", "n3"],
        TTL.as_secs() + 15,
        "n2 and n3 take n4's sessions",
    )
    .await;
    proxy.restore();
    eventually(60, "n4 back and running sessions again", || async {
        let o = owners(&nodes[2].base).await;
        (o.get("n4").copied().unwrap_or(0) > 0).then_some(())
    })
    .await;
    bases.lock().unwrap().push(n4.base.clone());

    // 5. Rolling restart of n2, n3, n4: SIGTERM, start again, next.
    for i in [1usize, 2] {
        let base = nodes[i].base.clone();
        bases.lock().unwrap().retain(|b| *b != base);
        nodes[i].terminate().await;
        nodes[i].spawn();
        nodes[i].ready().await;
        bases.lock().unwrap().push(base);
    }
    let base = n4.base.clone();
    bases.lock().unwrap().retain(|b| *b != base);
    n4.terminate().await;
    n4.spawn();
    n4.ready().await;
    bases.lock().unwrap().push(base);
    all_connected_on(
        &c3_again(&nodes[2]).await,
        &p,
        &ids,
        &["n2", "n3", "n4"],
        30,
        "every session connected after the rolling restart",
    )
    .await;

    let accepted = traffic.finish().await;
    assert!(accepted.len() > 50, "traffic flowed: {}", accepted.len());

    // Every accepted message reached its recipient exactly once.
    let wa_ids: HashSet<String> = accepted
        .iter()
        .map(|(id, _)| wagate::sessions::wa_message_id(id))
        .collect();
    let log = eventually(90, "every accepted message delivered", || async {
        let log = wa.messages().await.ok()?;
        let delivered: HashMap<String, serde_json::Value> = log
            .as_array()?
            .iter()
            .filter(|m| m["delivered"].as_object().is_some_and(|d| !d.is_empty()))
            .map(|m| (m["id"].as_str().unwrap().to_owned(), m.clone()))
            .collect();
        wa_ids
            .iter()
            .all(|id| delivered.contains_key(id))
            .then_some(delivered)
    })
    .await;
    // The recipient (a gateway session) stored each exactly once. A sender that died or
    // lost its database after writing a message but before recording it sends it again
    // under the same WhatsApp id; the relays are counted, not hidden.
    let stored: Vec<String> = store
        .run(|c| {
            use diesel::prelude::*;
            use wagate::storage::schema::inbound_messages;
            Ok(wagate::db_run!(c, |c| inbound_messages::table
                .select(inbound_messages::wa_message_id)
                .load::<String>(c))?)
        })
        .await
        .unwrap();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *times.entry(id.as_str()).or_default() += 1;
    }
    for id in &wa_ids {
        assert_eq!(
            times.get(id.as_str()).copied(),
            Some(1),
            "message {id} stored at its recipient once: {}",
            log[id]
        );
    }
    let resent = wa_ids
        .iter()
        .filter(|id| log[*id]["times_relayed"].as_u64().unwrap_or(0) > 1)
        .count();
    eprintln!(
        "{} messages accepted, every one delivered and stored once; {resent} written to WhatsApp again under the same id after a fault",
        wa_ids.len()
    );
    let o = overlaps(&sim.admin_url()).await;
    let pair = |v: &serde_json::Value| (v["first"].to_string(), v["second"].to_string());
    let before: HashSet<_> = baseline.as_array().unwrap().iter().map(pair).collect();
    let new: Vec<_> = o
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !before.contains(&pair(v)))
        .collect();
    assert!(
        new.is_empty(),
        "no device had two connections in use at once: {new:?}"
    );
    drop(nodes);
    drop(n4);
}

async fn c3_again(n: &Node) -> crate::support::session::Client {
    wagate::proto::v1::sessions_service_client::SessionsServiceClient::connect(n.base.clone())
        .await
        .unwrap()
}
