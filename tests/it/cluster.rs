//! Several nodes on one database: leases and their fencing, calls answered by any node,
//! the operator's view. Nodes here run in the test process on PostgreSQL; SQLite is one
//! node, and a second one on its file is refused.

use std::time::Duration;

use serde_json::json;
use wagate::domain::Settings;
use wagate::proto::v1::broadcasts_service_client::BroadcastsServiceClient;
use wagate::proto::v1::{
    CheckNumbersRequest, CreateSessionRequest, GetQrCodeRequest, GetSessionRequest,
    LogoutSessionRequest, RequestPairingCodeRequest, RestartSessionRequest, Session, SessionState,
    WatchSessionRequest,
};
use wagate::storage::Db;
use wagate::storage::cluster::{self, Fence};

use crate::support::session::{Client, link};
use crate::support::{TestApp, TestDb, TestProject, eventually, exec_sql, grpc_signed, read};

const SVC: &str = "/wagate.v1.SessionsService/";

/// A node of a test cluster: short leases, quick balancing, no rebalancing moves unless
/// asked (a test that checks who owns what must not see sessions wander).
pub fn node_settings(node: &str, moves_per_minute: u32) -> Settings {
    Settings {
        admin_token: Some("operator-secret".into()),
        cluster: wagate::cluster::ClusterSettings {
            lease_ttl: Duration::from_secs(3),
            lease_renew: Duration::from_secs(1),
            balance_interval: Duration::from_millis(200),
            moves_per_minute,
            ..Default::default()
        },
        node_id: node.to_owned(),
        ..Settings::default()
    }
}

async fn session(c: &mut Client, p: &TestProject, id: &str) -> Session {
    let req = grpc_signed(
        p,
        &format!("{SVC}GetSession"),
        GetSessionRequest {
            session_id: id.into(),
        },
    );
    c.get_session(req)
        .await
        .expect("get session")
        .into_inner()
        .session
        .expect("session")
}

async fn qr(c: &mut Client, p: &TestProject, id: &str) -> String {
    let req = grpc_signed(
        p,
        &format!("{SVC}GetQrCode"),
        GetQrCodeRequest {
            session_id: id.into(),
            ..Default::default()
        },
    );
    c.get_qr_code(req).await.expect("qr").into_inner().qr_code
}

async fn create(c: &mut Client, p: &TestProject, name: &str) -> Session {
    let req = grpc_signed(
        p,
        &format!("{SVC}CreateSession"),
        CreateSessionRequest {
            name: name.into(),
            ..Default::default()
        },
    );
    c.create_session(req)
        .await
        .expect("create")
        .into_inner()
        .session
        .expect("session")
}

/// SQLite is one node: a second server on the same file refuses to start, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_one_node() {
    let db = TestDb::sqlite();
    let url = db.url.clone();
    let first = TestApp::init(db).start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = wagate::app::launch(
        wagate::app::LaunchConfig {
            connector: None,
            database_url: url,
            master_key: first.key.clone(),
            settings: Settings {
                node_id: "second".into(),
                ..Settings::default()
            },
            db_pool_size: 2,
            writer: None,
        },
        listener,
    )
    .await;
    let err = second
        .err()
        .expect("a second node on one SQLite file is refused");
    assert!(
        err.to_string().contains("SQLite is single-node"),
        "clear reason: {err}"
    );
    // The first one is untouched by the attempt.
    let (code, _) = read(first.http.get(first.url("/ready")).send().await.unwrap()).await;
    assert_eq!(code, 200);
}

/// The fencing token: once another node claims a session's lease (the first one's expired),
/// the first node's epoch is refused for every write and for release; the new owner's passes.
async fn a_stale_owners_write_is_refused(db: TestDb) {
    let t = TestApp::init(db).start().await;
    let d = t.create_project().await.project_id;
    let device = t.admin().create_device(&d, None, None).await.unwrap();
    let store: Db = Db::open(&t.db.url, 2).unwrap();
    let id = device.device_id.clone();
    let a = store
        .run(move |c| cluster::claim_one(c, &id, "node-a", 60_000))
        .await
        .unwrap()
        .expect("node-a claims the free lease");
    let fence_a = Fence {
        device_id: device.device_id.clone(),
        node: "node-a".into(),
        epoch: a.epoch,
    };
    let f = fence_a.clone();
    store
        .run(move |c| cluster::check_fence(c, &f))
        .await
        .expect("owner writes");
    // While node-a's lease is live nobody else gets it.
    let id = device.device_id.clone();
    let none = store
        .run(move |c| cluster::claim_one(c, &id, "node-b", 60_000))
        .await
        .unwrap();
    assert!(none.is_none(), "a live lease is not taken");

    // node-a stops renewing: its lease expires and node-b claims it.
    exec_sql(
        &store,
        "UPDATE session_leases SET expires_at = 0",
        "UPDATE session_leases SET expires_at = 0",
    )
    .await;
    let claimed = store
        .run(|c| cluster::claim(c, "node-b", 10, 60_000))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].epoch, a.epoch + 1, "a new owner, a new epoch");
    assert_eq!(claimed[0].previous.as_deref(), Some("node-a"));
    let fence_b = Fence {
        node: "node-b".into(),
        epoch: claimed[0].epoch,
        ..fence_a.clone()
    };

    let f = fence_a.clone();
    let stale = store.run(move |c| cluster::check_fence(c, &f)).await;
    assert!(
        matches!(stale, Err(wagate::error::Error::SessionMoved)),
        "the stale owner's write is refused: {stale:?}"
    );
    let f = fence_a.clone();
    assert!(
        !store.run(move |c| cluster::release(c, &f)).await.unwrap(),
        "nor can it release what is no longer its lease"
    );
    let f = fence_b.clone();
    store
        .run(move |c| cluster::check_fence(c, &f))
        .await
        .expect("the new owner writes");
}

crate::on_both_backends!(a_stale_owners_write_is_refused);

/// Two nodes, one PostgreSQL: whichever node a call lands on, it answers as the owner would
/// (QR, pairing code, status with the owner, WatchSession, send, restart, a number check,
/// logout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_for_a_session() {
    let Some(db) = TestDb::postgres() else { return };
    let a = TestApp::init(db)
        .with_wasim()
        .configure(|s| *s = node_settings("node-a", 0))
        .start()
        .await;
    let b = a
        .another_node("node-b")
        .configure(|s| *s = node_settings("node-b", 0))
        .start()
        .await;
    let admin = a.wa();
    let p = a.create_project().await;
    let (mut ca, mut cb) = (a.sessions_client().await, b.sessions_client().await);

    // Created on A: A runs it. B shows the same QR and names A as the owner.
    let s = create(&mut ca, &p, "one").await;
    let id = s.session_id.clone();
    let code = eventually(15, "the same QR on both nodes", || {
        let (mut ca, mut cb, p, id) = (ca.clone(), cb.clone(), &p, id.clone());
        async move {
            let (qa, qb) = (qr(&mut ca, p, &id).await, qr(&mut cb, p, &id).await);
            (!qa.is_empty() && qa == qb).then_some(qa)
        }
    })
    .await;
    let on_b = session(&mut cb, &p, &id).await;
    assert_eq!(on_b.owner_node, "node-a");
    assert_eq!(on_b.state, SessionState::Qr as i32);

    // B's WatchSession follows what A's session does.
    let req = grpc_signed(
        &p,
        &format!("{SVC}WatchSession"),
        WatchSessionRequest {
            session_id: id.clone(),
        },
    );
    let mut watch = cb
        .watch_session(req)
        .await
        .expect("watch on B")
        .into_inner();
    admin.scan(&code, "15550111001").await.expect("scan");
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = watch.message().await.expect("watch stream") {
            let s = m.session.expect("session");
            if s.state == SessionState::Connected as i32 {
                return s;
            }
        }
        panic!("the watch ended before the session connected");
    })
    .await
    .expect("B's watch sees the connection made on A");
    assert_eq!(connected.phone_number, "15550111001");

    // Sent through B, delivered by A's session.
    let (code_, sent) = b
        .send_json(
            &p.via(&s),
            json!({"recipient": "15550111999", "message": "via node b"}),
        )
        .await;
    assert_eq!(code_, 201, "{sent}");
    let mid = sent["data"]["id"].as_str().unwrap().to_owned();
    eventually(20, "the message sent by the owner", || async {
        let (_, st) = b.status(&p, &mid).await;
        (st["data"]["status"] != "queued").then_some(())
    })
    .await;
    let wa_id = wagate::sessions::wa_message_id(&mid);
    let log = admin.messages().await.unwrap();
    let records: Vec<_> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == wa_id.as_str())
        .collect();
    assert_eq!(records.len(), 1, "WhatsApp got it once: {log}");

    // Restart asked on B: A restarts it and it connects again, still on A.
    let req = grpc_signed(
        &p,
        &format!("{SVC}RestartSession"),
        RestartSessionRequest {
            session_id: id.clone(),
        },
    );
    cb.restart_session(req).await.expect("restart via B");
    let again = eventually(20, "connected after the restart", || {
        let (mut cb, p, id) = (cb.clone(), &p, id.clone());
        async move {
            let s = session(&mut cb, p, &id).await;
            (s.state == SessionState::Connected as i32).then_some(s)
        }
    })
    .await;
    assert_eq!(again.owner_node, "node-a");

    // A pairing code for a session A runs, asked on B.
    let two = create(&mut ca, &p, "two").await;
    let req = grpc_signed(
        &p,
        &format!("{SVC}RequestPairingCode"),
        RequestPairingCodeRequest {
            session_id: two.session_id.clone(),
            phone_number: "15550111002".into(),
        },
    );
    let pairing = cb
        .request_pairing_code(req)
        .await
        .expect("pairing code via B")
        .into_inner();
    assert_eq!(pairing.code.len(), 8, "{pairing:?}");
    assert_eq!(
        session(&mut cb, &p, &two.session_id).await.owner_node,
        "node-a"
    );
    admin
        .pair_code("15550111002", &pairing.code)
        .await
        .expect("the phone enters the code");
    eventually(20, "the second session linked by code", || {
        let (mut cb, p, id) = (cb.clone(), &p, two.session_id.clone());
        async move {
            (session(&mut cb, p, &id).await.state == SessionState::Connected as i32).then_some(())
        }
    })
    .await;

    // A number check asked on B, through a session A runs: forwarded to the owner.
    let mut broadcasts = BroadcastsServiceClient::connect(b.base.clone())
        .await
        .unwrap();
    let checked = broadcasts
        .check_numbers(grpc_signed(
            &p,
            "/wagate.v1.BroadcastsService/CheckNumbers",
            CheckNumbersRequest {
                session_id: two.session_id.clone(),
                phone_numbers: vec!["15550111001".into(), "15550111777".into()],
            },
        ))
        .await
        .expect("number check via B")
        .into_inner();
    let statuses: Vec<&str> = checked.numbers.iter().map(|n| n.status.as_str()).collect();
    assert_eq!(statuses, ["valid", "invalid"], "{checked:?}");

    // Logout asked on B: A logs it out; nobody runs it any more.
    let req = grpc_signed(
        &p,
        &format!("{SVC}LogoutSession"),
        LogoutSessionRequest {
            session_id: id.clone(),
        },
    );
    cb.logout_session(req).await.expect("logout via B");
    let gone = session(&mut ca, &p, &id).await;
    assert_eq!(gone.state, SessionState::LoggedOut as i32);
    assert_eq!(gone.owner_node, "");

    // The operator's view, from either node.
    let (code_, view) = read(
        b.http
            .get(b.url("/api/v1/cluster"))
            .header("Authorization", "Bearer operator-secret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code_, 200, "{view}");
    let nodes = view["data"]["nodes"].as_array().unwrap();
    let by_id = |n: &str| nodes.iter().find(|x| x["nodeId"] == n).cloned().unwrap();
    assert_eq!(by_id("node-a")["state"], "live");
    assert_eq!(by_id("node-a")["sessionsOwned"], 1, "{view}");
    assert_eq!(by_id("node-b")["sessionsOwned"], 0, "{view}");
    assert_eq!(view["meta"]["server_id"], "node-b");
    let (code_, _) = read(
        b.http
            .get(b.url("/api/v1/cluster"))
            .header("Authorization", "Bearer wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code_, 401);
    b.server.shutdown().await;
    a.server.shutdown().await;
}

/// A graceful stop hands every session over at once: the other node runs them within a
/// couple of seconds, not after the lease TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_sessions_over_at_once() {
    let Some(db) = TestDb::postgres() else { return };
    // Leases far longer than the wait below: a session that moves within it was released,
    // not left to expire.
    let long = |node: &str| {
        let mut s = node_settings(node, 0);
        s.cluster.lease_ttl = Duration::from_secs(60);
        s.cluster.lease_renew = Duration::from_secs(20);
        s
    };
    let a = TestApp::init(db)
        .with_wasim()
        .configure(|s| *s = long("node-a"))
        .start()
        .await;
    let admin = a.wa();
    let p = a.create_project().await;
    let mut ca = a.sessions_client().await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let s = link(
            &mut ca,
            &p,
            admin,
            &format!("s{i}"),
            &format!("1555012200{i}"),
        )
        .await;
        ids.push(s.session_id);
    }
    let b = a
        .another_node("node-b")
        .configure(|s| *s = long("node-b"))
        .start()
        .await;
    let cb = b.sessions_client().await;
    a.server.shutdown().await;
    for id in &ids {
        eventually(15, "the session connected on node-b", || {
            let (mut cb, p, id) = (cb.clone(), &p, id.clone());
            async move {
                let s = session(&mut cb, p, &id).await;
                (s.state == SessionState::Connected as i32 && s.owner_node == "node-b")
                    .then_some(())
            }
        })
        .await;
    }
    b.server.shutdown().await;
}

/// Draining a node (the operator endpoint) moves its sessions to the others while it keeps
/// answering; resumed, it takes sessions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_sessions_over_and_keeps_serving() {
    let Some(db) = TestDb::postgres() else { return };
    let a = TestApp::init(db)
        .with_wasim()
        .configure(|s| *s = node_settings("node-a", 0))
        .start()
        .await;
    let p = a.create_project().await;
    let mut ca = a.sessions_client().await;
    let s = link(&mut ca, &p, a.wa(), "d", "15550144001").await;
    let b = a
        .another_node("node-b")
        .configure(|s| *s = node_settings("node-b", 0))
        .start()
        .await;
    let operator = |t: &TestApp, path: &str| {
        t.http
            .post(t.url(path))
            .header("Authorization", "Bearer operator-secret")
            .send()
    };
    let (code, body) = read(
        operator(&b, "/api/v1/cluster/nodes/node-a/drain")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    eventually(15, "the session moved to node-b", || {
        let (mut ca, p, id) = (ca.clone(), &p, s.session_id.clone());
        async move {
            // Asked on the draining node, which still answers.
            let s = session(&mut ca, p, &id).await;
            (s.state == SessionState::Connected as i32 && s.owner_node == "node-b").then_some(())
        }
    })
    .await;
    let (_, view) = read(
        a.http
            .get(a.url("/api/v1/cluster"))
            .header("Authorization", "Bearer operator-secret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let state_of = |n: &str| {
        view["data"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["nodeId"] == n)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of("node-a"), "draining", "{view}");
    let (code, body) = read(
        operator(&a, "/api/v1/cluster/nodes/nope/drain")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("NODE_NOT_FOUND")),
        "{body}"
    );
    let (code, _) = read(
        operator(&a, "/api/v1/cluster/nodes/node-a/resume")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    b.server.shutdown().await;
    a.server.shutdown().await;
}
