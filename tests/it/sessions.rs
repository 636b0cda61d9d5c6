//! Real sessions end to end: the gateway's whatsapp-rust clients against wasim, the
//! loopback WhatsApp server. Link by QR, send through the RK API, receive, survive a
//! restart without a new QR and without sending anything twice, follow kick and logout.

use serde_json::json;
use wagate::client::Multipart;
use wagate::proto::v1::{ListSessionsRequest, RestartSessionRequest, Session, SessionState};
use wagate::storage::{Db, inbound, media, sessions as store};
use wagate::values::SessionId;

use crate::on_both_backends;
use crate::support::session::{Client, get, wait_state};
use crate::support::{
    TestApp, TestDb, TestProject, eventually, exec_sql, files, grpc_signed, read,
};

on_both_backends!(
    sessions_link_send_receive_restart,
    session_state_is_not_stale_after_restart,
    banned_session_stays_banned,
    outdated_client_fails_for_good,
    inbound_survives_a_refused_write,
);

const SVC: &str = "/wagate.v1.SessionsService/";

async fn status_of(t: &TestApp, p: &TestProject, id: &str) -> serde_json::Value {
    t.status(p, id).await.1["data"].clone()
}

async fn wait_status(t: &TestApp, p: &TestProject, id: &str, want: &str) -> serde_json::Value {
    eventually(20, &format!("message {id} to be {want}"), || async {
        let s = status_of(t, p, id).await;
        (s["status"] == want || (want == "delivered" && s["status"] == "read")).then_some(s)
    })
    .await
}

async fn sessions_link_send_receive_restart(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(2)
        .node("node-1")
        .start()
        .await;
    let (p, a, b) = (
        t.project().clone(),
        t.session(0).clone(),
        t.session(1).clone(),
    );
    let (pa, pb) = (a.phone_number.as_str(), b.phone_number.as_str());
    let via_a = p.via(&a);

    // Text through the RK endpoint: queued → sent → delivered, and B stores it.
    let (code, body) = t
        .send_json(
            &via_a,
            json!({"recipient": pb, "type": "text", "message": "hello B", "payload": {"k": 1}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let st = wait_status(&t, &via_a, &id, "delivered").await;
    assert!(
        st["sent_at"].is_string() && st["delivered_at"].is_string(),
        "{st}"
    );
    let db = t.db.open();
    let inbound = eventually(10, "B's inbound message", || {
        let db = db.clone();
        let bid = b.session_id.clone();
        async move {
            let rows = db
                .run(move |c| inbound::list_inbound(c, &SessionId::from(bid), 50, 0))
                .await
                .unwrap();
            rows.into_iter()
                .find(|r| r.body.as_deref() == Some("hello B"))
        }
    })
    .await;
    assert_eq!(inbound.sender_phone.as_deref(), Some(pa));
    assert_eq!(inbound.kind, "text");

    // An image through the RK multipart form arrives byte-identical in B's store.
    let form = Multipart::new()
        .text("recipient", pb)
        .text("type", "image")
        .text("message", "Promo today")
        .file("media", "p.jpg", "image/jpeg", files::JPEG);
    let (ct, raw) = form.finish();
    let (code, body) = read(
        t.signed(reqwest::Method::POST, "/api/v1/send", &via_a, raw)
            .header("Content-Type", ct)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    wait_status(
        &t,
        &via_a,
        body["data"]["id"].as_str().unwrap(),
        "delivered",
    )
    .await;
    let image = eventually(10, "B's image", || {
        let db = db.clone();
        let bid = b.session_id.clone();
        async move {
            let rows = db
                .run(move |c| inbound::list_inbound(c, &SessionId::from(bid), 50, 0))
                .await
                .unwrap();
            rows.into_iter().find(|r| r.kind == "image")
        }
    })
    .await;
    assert_eq!(image.body.as_deref(), Some("Promo today"));
    let mid = image.media_id.clone().expect("media stored");
    let blob = db
        .run(move |c| media::media_bytes(c, &mid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob.data, files::JPEG, "media round-trips byte-identical");

    // Restart the gateway: both sessions come back connected with no QR; messages accepted
    // while they reconnect are sent exactly once.
    let t = t.stop().await.node("node-2").start().await;
    let mut c = t.sessions_client().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (code, body) = t
            .send_json(
                &via_a,
                json!({"recipient": pb, "message": format!("after restart {i}")}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_owned());
    }
    wait_state(&mut c, &p, &a.session_id, SessionState::Connected, 20).await;
    wait_state(&mut c, &p, &b.session_id, SessionState::Connected, 20).await;
    for id in &ids {
        wait_status(&t, &via_a, id, "delivered").await;
    }
    let log = t.wa().messages().await.unwrap();
    for id in ids.iter().chain([&id]) {
        let wa = wagate::sessions::wa_message_id(id);
        let rec = log
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == wa.as_str())
            .unwrap_or_else(|| panic!("{wa} relayed"));
        assert_eq!(rec["times_relayed"], 1, "sent once: {rec}");
        let deliveries: u64 = rec["sent"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(deliveries, 1, "reached B's device once: {rec}");
    }

    // Kick at WhatsApp: the session reconnects by itself (a new connection, not the
    // state from before the kick).
    let connected_at = |s: &Session| s.last_connected_at.as_ref().map(|t| (t.seconds, t.nanos));
    let before = connected_at(&get(&mut c, &p, &a.session_id).await);
    t.wa().kick(pa).await.unwrap();
    eventually(20, "a new connection after the kick", || {
        let (mut c, p, id) = (c.clone(), &p, &a.session_id);
        async move {
            let s = get(&mut c, p, id).await;
            (s.state == SessionState::Connected as i32 && connected_at(&s) > before).then_some(())
        }
    })
    .await;
    let (code, body) = t
        .send_json(&via_a, json!({"recipient": pb, "message": "after kick"}))
        .await;
    assert_eq!(code, 201);
    wait_status(
        &t,
        &via_a,
        body["data"]["id"].as_str().unwrap(),
        "delivered",
    )
    .await;

    // Logged out from the phone: the session says so, with the reason.
    t.wa().logout(pb).await.unwrap();
    let s = wait_state(&mut c, &p, &b.session_id, SessionState::LoggedOut, 20).await;
    assert!(!s.reason.is_empty());
    t.shutdown().await;
}

async fn stored_state(db: &Db, id: &str) -> (String, Option<String>) {
    let id = id.to_owned();
    let row = db
        .run(move |c| store::get(c, &SessionId::from(id)))
        .await
        .unwrap()
        .expect("session row");
    (row.state, row.state_reason)
}

/// After a restart the stored state from before it is never reported as current: a graceful
/// stop records `disconnected`, and a restored session reads `connecting` until it logs in.
async fn session_state_is_not_stale_after_restart(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(1)
        .node("node-1")
        .start()
        .await;
    let p = t.project().clone();
    let id = t.session(0).session_id.clone();

    let stopped = t.stop().await;
    let db = stopped.db().open();
    assert_eq!(
        stored_state(&db, &id).await,
        ("disconnected".into(), Some("gateway stopped".into()))
    );
    // As after a crash: the row still claims the connection of the gone process.
    {
        let id = id.clone();
        db.run(move |c| store::set_state(c, &SessionId::from(id), "connected", None, 1))
            .await
            .unwrap();
    }

    // WhatsApp does not let the session in yet, so it cannot be connected.
    stopped.sim().admin.hold_logins(true).await.unwrap();
    let t = stopped.node("node-2").start().await;
    let mut c = t.sessions_client().await;
    assert_eq!(stored_state(&db, &id).await.0, "connecting");
    let s = get(&mut c, &p, &id).await;
    assert_eq!(s.state, SessionState::Connecting as i32, "{s:?}");
    let req = grpc_signed(
        &p,
        &format!("{SVC}ListSessions"),
        ListSessionsRequest::default(),
    );
    let listed = c.list_sessions(req).await.unwrap().into_inner().sessions;
    let s = listed.iter().find(|s| s.session_id == id).expect("listed");
    assert_eq!(s.state, SessionState::Connecting as i32, "{s:?}");

    t.wa().hold_logins(false).await.unwrap();
    wait_state(&mut c, &p, &id, SessionState::Connected, 20).await;
    eventually(10, "connected stored", || {
        let db = db.clone();
        let id = id.clone();
        async move { (stored_state(&db, &id).await.0 == "connected").then_some(()) }
    })
    .await;
    t.shutdown().await;
}

/// Long enough for a supervisor that (wrongly) restarted a session to have reconnected it:
/// its first backoff is 2 s. Not a speed assertion: it only gives a wrong restart its chance.
const RESTART_CHANCE: std::time::Duration = std::time::Duration::from_secs(4);

/// Whether wasim has a live connection for any device of `phone`.
async fn connected_at_wasim(admin: &wasim::client::Admin, phone: &str) -> bool {
    let accounts = admin.accounts().await.unwrap();
    accounts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["phone"] == phone)
        .flat_map(|a| a["devices"].as_array().cloned().unwrap_or_default())
        .any(|d| d["connected"] == true)
}

async fn restart_session(c: &mut Client, p: &TestProject, id: &str) {
    let req = grpc_signed(
        p,
        &format!("{SVC}RestartSession"),
        RestartSessionRequest {
            session_id: id.into(),
        },
    );
    c.restart_session(req).await.expect("restart");
}

/// A ban at WhatsApp shows as `banned` with its reason, and the session is not restarted
/// (even once the ban is lifted) until asked to.
async fn banned_session_stays_banned(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(1)
        .node("node-1")
        .start()
        .await;
    let (p, a, admin) = (t.project(), t.session(0), t.wa());
    let phone = a.phone_number.as_str();
    let mut c = t.sessions_client().await;

    admin.ban(phone, 3600).await.unwrap();
    let s = wait_state(&mut c, p, &a.session_id, SessionState::Banned, 20).await;
    assert!(s.reason.starts_with("temporarily banned"), "{s:?}");
    assert!(s.reason.contains(" for "), "the ban's duration: {s:?}");
    let db = t.db.open();
    assert_eq!(stored_state(&db, &a.session_id).await.0, "banned");

    admin.ban(phone, 0).await.unwrap();
    tokio::time::sleep(RESTART_CHANCE).await;
    assert!(!connected_at_wasim(admin, phone).await, "not restarted");
    let s = get(&mut c, p, &a.session_id).await;
    assert_eq!(s.state, SessionState::Banned as i32, "{s:?}");

    // Restarted on request, it connects again.
    restart_session(&mut c, p, &a.session_id).await;
    wait_state(&mut c, p, &a.session_id, SessionState::Connected, 20).await;
    t.shutdown().await;
}

/// WhatsApp refusing the client version (405) shows as `failed` ("client outdated…"), and
/// the session is not restarted: the same build would only be refused again.
async fn outdated_client_fails_for_good(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(1)
        .node("node-1")
        .start()
        .await;
    let (p, a, admin) = (t.project().clone(), t.session(0).clone(), t.wa().clone());
    let phone = a.phone_number.as_str();
    let mut c = t.sessions_client().await;

    let (x, y, z) = wasim::client::CLIENT_VERSION;
    admin.min_version(Some((x, y, z + 1))).await.unwrap();
    admin.kick(phone).await.unwrap();
    let s = wait_state(&mut c, &p, &a.session_id, SessionState::Failed, 20).await;
    assert!(s.reason.starts_with("client outdated"), "{s:?}");
    let db = t.db.open();
    assert_eq!(stored_state(&db, &a.session_id).await.0, "failed");

    admin.min_version(None).await.unwrap();
    tokio::time::sleep(RESTART_CHANCE).await;
    assert!(!connected_at_wasim(&admin, phone).await, "not restarted");
    let s = get(&mut c, &p, &a.session_id).await;
    assert_eq!(s.state, SessionState::Failed as i32, "{s:?}");
    // A graceful stop records running sessions as disconnected, but keeps this one's reason.
    let stopped = t.stop().await;
    let db = stopped.db().open();
    let (state, reason) = stored_state(&db, &a.session_id).await;
    assert_eq!(state, "failed");
    assert!(reason.unwrap_or_default().starts_with("client outdated"));
    stopped.shutdown().await;
}

/// A message is acknowledged to WhatsApp only once it is stored: while the database refuses
/// inbound rows, WhatsApp keeps the message; once it accepts them again, it arrives, once.
async fn inbound_survives_a_refused_write(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(2)
        .node("node-1")
        .start()
        .await;
    let (b, admin) = (t.session(1), t.wa());
    let via_a = t.project().via(t.session(0));
    let pb = b.phone_number.as_str();
    let db = t.db.open();
    exec_sql(
        &db,
        "CREATE TRIGGER refuse_inbound BEFORE INSERT ON inbound_messages \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        "CREATE FUNCTION refuse_inbound() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse_inbound BEFORE INSERT ON inbound_messages \
         FOR EACH ROW EXECUTE FUNCTION refuse_inbound()",
    )
    .await;

    let (code, body) = t
        .send_json(
            &via_a,
            json!({"recipient": pb, "message": "kept by WhatsApp"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let wa = wagate::sessions::wa_message_id(&id);
    // Written to B's socket, and B could not store it.
    let record = || async {
        admin
            .messages()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == wa.as_str())
            .cloned()
    };
    eventually(20, "the message written to B", || async {
        let rec = record().await?;
        let sent: u64 = rec["sent"]
            .as_object()?
            .values()
            .filter_map(|v| v.as_u64())
            .sum();
        (sent > 0).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let rec = record().await.expect("record");
    assert!(
        rec["delivered"].as_object().is_none_or(|d| d.is_empty()),
        "B confirmed a message it did not store: {rec}"
    );
    let inbound = |db: Db, bid: String| async move {
        db.run(move |c| inbound::list_inbound(c, &SessionId::from(bid), 50, 0))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.body.as_deref() == Some("kept by WhatsApp"))
            .count()
    };
    assert_eq!(inbound(db.clone(), b.session_id.clone()).await, 0);

    // The database accepts again; the session reconnects by itself (with back-off) and
    // WhatsApp redelivers the message.
    exec_sql(
        &db,
        "DROP TRIGGER refuse_inbound",
        "DROP TRIGGER refuse_inbound ON inbound_messages; DROP FUNCTION refuse_inbound()",
    )
    .await;
    eventually(30, "the message stored after the redelivery", || {
        let (db, bid) = (db.clone(), b.session_id.clone());
        async move { (inbound(db, bid).await > 0).then_some(()) }
    })
    .await;
    wait_status(&t, &via_a, &id, "delivered").await;
    assert_eq!(
        inbound(db.clone(), b.session_id.clone()).await,
        1,
        "stored once"
    );
    t.shutdown().await;
}
