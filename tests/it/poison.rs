//! One tenant's poison message must not hurt the others: U+0000 (which PostgreSQL cannot
//! store) is refused up front on every surface, the same on both backends; and an item the
//! database refuses is isolated at once, its neighbours committed in the same round.

use serde_json::json;
use std::time::Duration;
use wagate::client::Multipart;
use wagate::proto::v1::messaging_service_client::MessagingServiceClient;
use wagate::proto::v1::{Media, MessageType, SendMessageRequest};
use wagate::storage::{Db, DbConn};

use crate::on_both_backends;
use crate::sak_api::Sak;
use crate::support::{
    TestApp, TestDb, TestProject, assert_error, eventually, exec_sql, files, grpc_signed,
};

on_both_backends!(
    nul_is_refused_on_every_surface,
    a_refused_item_is_isolated_at_once
);

fn assert_nul_refused(got: &(u16, serde_json::Value), field: &str) {
    assert_error(got, 400, "VALIDATION_ERROR");
    let msg = got.1["message"].as_str().unwrap();
    assert!(
        msg.contains(field) && msg.contains("U+0000"),
        "names {field}: {msg}"
    );
}

async fn nul_is_refused_on_every_surface(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let to = "6281234567890";

    // RK JSON: the text, the recipient, the payload's strings and keys at any depth.
    let cases = [
        (json!({"recipient": to, "message": "a\u{0}b"}), "message"),
        (
            json!({"recipient": "62812\u{0}34567890", "message": "x"}),
            "recipient",
        ),
        (
            json!({"recipient": to, "message": "x", "payload": {"a": [1, {"b": "c\u{0}"}]}}),
            "payload",
        ),
        (
            json!({"recipient": to, "message": "x", "payload": {"k\u{0}": 1}}),
            "payload",
        ),
    ];
    for (body, field) in cases {
        assert_nul_refused(&t.send_json(p, body).await, field);
    }

    // RK multipart: a text field, the payload field (a file name with NUL cannot be sent in
    // a part's headers; gRPC's is checked below).
    let form = |message: &str, payload: &str| {
        Multipart::new()
            .text("recipient", to)
            .text("type", "image")
            .text("message", message)
            .text("payload", payload)
            .file("media", "a.png", "image/png", files::PNG)
    };
    let cases = [
        (form("a\u{0}b", "{}"), "message"),
        (form("x", r#"{"a":"\u0000"}"#), "payload"),
    ];
    for (f, field) in cases {
        assert_nul_refused(&t.send_form(p, f).await, field);
    }

    // gRPC SendMessage: INVALID_ARGUMENT with the same code.
    let mut c = MessagingServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let send = "/wagate.v1.MessagingService/SendMessage";
    let mut payload = prost_types::Struct::default();
    payload.fields.insert(
        "ref".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("g\u{0}1".into())),
        },
    );
    for (req, field) in [
        (
            SendMessageRequest {
                recipient: to.into(),
                r#type: MessageType::Text as i32,
                message: "a\u{0}b".into(),
                ..Default::default()
            },
            "message",
        ),
        (
            SendMessageRequest {
                recipient: to.into(),
                r#type: MessageType::Text as i32,
                message: "x".into(),
                payload: Some(payload),
                ..Default::default()
            },
            "payload",
        ),
        (
            SendMessageRequest {
                recipient: to.into(),
                r#type: MessageType::Image as i32,
                media: Some(Media {
                    data: files::PNG.to_vec(),
                    filename: "a\u{0}.png".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "file name",
        ),
    ] {
        let e = c.send_message(grpc_signed(p, send, req)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert_eq!(
            e.metadata().get("x-error-code").unwrap().to_str().unwrap(),
            "VALIDATION_ERROR"
        );
        assert!(e.message().contains(field), "{e:?}");
    }
    assert!(t.message_ids(p).await.is_empty(), "nothing was stored");

    // SAK: register, login, key names, path ids, webhook URLs.
    let s = Sak { t: &t };
    let none = ("", "");
    let register = "/api/v1/auth/register";
    let ok_password = "correct horse";
    assert_nul_refused(
        &s.post(
            register,
            none,
            json!({"email": "nul@example.com", "password": "correct\u{0}horse"}),
        )
        .await,
        "password",
    );
    assert_nul_refused(
        &s.post(
            register,
            none,
            json!({"email": "nul@example.com", "password": ok_password, "name": "N\u{0}"}),
        )
        .await,
        "name",
    );
    assert_nul_refused(
        &s.post(
            "/api/v1/auth/login",
            none,
            json!({"email": "nul\u{0}@example.com", "password": ok_password}),
        )
        .await,
        "email",
    );
    // The refused registrations stored nothing: the email is still free.
    let (code, reg) = s
        .post(
            register,
            none,
            json!({"email": "nul@example.com", "password": ok_password}),
        )
        .await;
    assert_eq!(code, 201, "{reg}");
    let bearer = format!("Bearer {}", reg["data"]["token"].as_str().unwrap());
    let jwt = ("authorization", bearer.as_str());
    assert_nul_refused(
        &s.post("/api/v1/auth/api-keys", jwt, json!({"name": "k\u{0}"}))
            .await,
        "name",
    );
    assert_nul_refused(
        &s.get("/api/v1/sessions/abc%00def/status", jwt).await,
        "session id",
    );
    assert_nul_refused(
        &s.post(
            "/api/v1/webhooks",
            jwt,
            json!({"url": "https://example.com/hook\u{0}"}),
        )
        .await,
        "url",
    );
    let (code, hooks) = s.get("/api/v1/webhooks", jwt).await;
    assert_eq!(code, 200, "{hooks}");
    assert_eq!(hooks["data"].as_array().map(Vec::len), Some(0), "{hooks}");
}

/// Holds the lock every accept batch takes first (SQLite: the write lock; PostgreSQL: the
/// usage counters), so requests queue up and the writers then take them as one batch.
struct WriterPlug {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl WriterPlug {
    async fn hold(url: &str) -> WriterPlug {
        use diesel::connection::SimpleConnection;
        let mut conn = Db::open(url, 1).unwrap().connect().unwrap();
        let (held_tx, held) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            match &mut conn {
                DbConn::Sqlite(c) => c.batch_execute("BEGIN IMMEDIATE"),
                DbConn::Postgres(c) => {
                    // Idle in its transaction on purpose: exempt from the server's timeout.
                    c.batch_execute(
                        "SET idle_in_transaction_session_timeout = 0; \
                         BEGIN; LOCK TABLE usage_counters IN EXCLUSIVE MODE",
                    )
                }
            }
            .expect("take the lock");
            let _ = held_tx.send(());
            let _ = released.recv_timeout(Duration::from_secs(30));
            wagate::db_run!(&mut conn, |c| c.batch_execute("COMMIT")).expect("release");
        });
        held.await.expect("lock held");
        WriterPlug { release, thread }
    }

    fn release(self) {
        let _ = self.release.send(());
        self.thread.join().expect("plug thread");
    }
}

/// A trigger refuses one recipient. Tenant A sends 5 messages to it while tenant B sends 50
/// good ones, all queued into the same batch: every good one is accepted and stored, every
/// refused one gets its own error (500: the database refused it for good, no retry will
/// help), and the writers never retried a whole batch.
async fn a_refused_item_is_isolated_at_once(db: TestDb) {
    let t = TestApp::init(db).start().await;
    let (a, b) = (t.create_project().await, t.create_project().await);
    let refused = "6289999999999";
    let db = t.db.open();
    exec_sql(
        &db,
        "CREATE TRIGGER refuse_recipient BEFORE INSERT ON messages \
         WHEN NEW.recipient = '6289999999999' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        "CREATE FUNCTION refuse_recipient() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse_recipient BEFORE INSERT ON messages FOR EACH ROW \
         WHEN (NEW.recipient = '6289999999999') EXECUTE FUNCTION refuse_recipient()",
    )
    .await;
    let gw = &t.server.gateway;
    let before = gw.accept_stats();

    let plug = WriterPlug::hold(&t.db.url).await;
    let t = &t;
    let send = |p: TestProject, to: String, i: usize| async move {
        let r = t
            .send_json(&p, json!({"recipient": to, "message": format!("m{i}")}))
            .await;
        (to == refused, r)
    };
    // Bounded below SQLite's busy_timeout (10 s), past which a plugged writer would fail.
    let wait = if t.db.is_postgres() { 25 } else { 8 };
    let backlog = || gw.accept_backlog();
    // B's 50 first, 20 ms apart: each idle writer takes what has arrived and blocks on the
    // plug; the rest queue (sent all at once, one writer could drain the whole burst into
    // its batch and leave nothing queued). Once the backlog holds still, every writer is busy.
    let goods = futures::future::join_all((0..50).map(|i| {
        let b = b.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            send(b, format!("62812{i:08}"), i).await
        }
    }));
    tokio::pin!(goods);
    let last = std::cell::Cell::new(0);
    tokio::select! {
        _ = eventually(wait, "B's requests queued behind the plug", || async {
            let (now, before) = (backlog(), last.replace(backlog()));
            (now >= 5 && now == before).then_some(())
        }) => {}
        _ = &mut goods => panic!("requests finished while the writers were plugged"),
    }
    // Then A's 5 refused ones, which can only queue: in the batch the queue becomes.
    let queued = backlog();
    let bads = futures::future::join_all((0..5).map(|i| send(a.clone(), refused.into(), i)));
    tokio::pin!(bads);
    tokio::select! {
        _ = eventually(wait, "A's requests queued", || async {
            (backlog() >= queued + 5).then_some(())
        }) => {}
        _ = &mut goods => panic!("requests finished while the writers were plugged"),
        _ = &mut bads => panic!("requests finished while the writers were plugged"),
    }
    plug.release();
    let (goods, bads) = tokio::join!(goods, bads);
    let results: Vec<_> = goods.into_iter().chain(bads).collect();

    let mut good = 0;
    for (bad, (code, body)) in &results {
        if *bad {
            assert_error(&(*code, body.clone()), 500, "INTERNAL_ERROR");
        } else {
            assert_eq!(*code, 201, "{body}");
            good += 1;
        }
    }
    assert_eq!(good, 50);
    assert_eq!(
        t.message_ids(&b).await.len(),
        50,
        "every good one is stored"
    );
    assert!(t.message_ids(&a).await.is_empty(), "no refused one is");
    let after = gw.accept_stats();
    assert_eq!(
        after.batch_retries, before.batch_retries,
        "no batch was retried whole"
    );
    assert!(
        after.isolated_batches > before.isolated_batches,
        "the refused items shared a batch with good ones: {after:?}"
    );
}
