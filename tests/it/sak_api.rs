//! The SAK self-hosted API contract end to end, against wasim: accounts and keys, sessions
//! with QR, messaging with session or user keys, history, its errors and per-IP limits,
//! and the same sessions driven through the RK endpoints with the account's credentials.

use serde_json::{Value, json};
use wagate::client::Multipart;

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, TestProject, assert_error, eventually, files, read};

on_both_backends!(
    sak_accounts_sessions_and_messages,
    media_is_served_then_expires,
    concurrent_creates_stop_at_the_session_cap,
);

pub(crate) struct Sak<'a> {
    pub t: &'a TestApp,
}

impl Sak<'_> {
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.t.http.request(method, self.t.url(path))
    }

    pub async fn post(&self, path: &str, auth: (&str, &str), body: Value) -> (u16, Value) {
        let mut r = self
            .req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string());
        if !auth.0.is_empty() {
            r = r.header(auth.0, auth.1);
        }
        read(r.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, auth: (&str, &str)) -> (u16, Value) {
        let mut r = self.req(reqwest::Method::GET, path);
        if !auth.0.is_empty() {
            r = r.header(auth.0, auth.1);
        }
        read(r.send().await.unwrap()).await
    }

    /// Registers an account and returns its `Authorization: Bearer …` value.
    pub async fn register(&self, email: &str) -> String {
        let body = json!({"email": email, "password": "correct horse"});
        let (code, reg) = self.post("/api/v1/auth/register", ("", ""), body).await;
        assert_eq!(code, 201, "{reg}");
        format!("Bearer {}", reg["data"]["token"].as_str().unwrap())
    }
}

/// Links a SAK session by scanning its QR at wasim's simulated phone.
pub(crate) async fn link(s: &Sak<'_>, auth: (&str, &str), id: &str, phone: &str) {
    let qr = eventually(15, "a QR code", || async {
        let (code, b) = s.get(&format!("/api/v1/sessions/{id}/qr"), auth).await;
        assert_eq!(code, 200, "{b}");
        b["data"]["qrCode"].as_str().map(str::to_owned)
    })
    .await;
    s.t.wa().scan(&qr, phone).await.expect("scan");
    eventually(20, "connected", || async {
        // Sparingly: these calls count against the document's per-IP limit (100 a minute).
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let (_, b) = s.get(&format!("/api/v1/sessions/{id}/status"), auth).await;
        (b["data"]["connected"] == true).then_some(b)
    })
    .await;
}

async fn sak_accounts_sessions_and_messages(db: TestDb) {
    let t = TestApp::init(db)
        .with_wasim()
        .node("node-sak")
        .start()
        .await;
    let s = Sak { t: &t };
    let none = ("", "");

    // Accounts: register, login, wrong password, duplicate email; then the auth limit (5/min per IP).
    let (code, reg) = s
        .post(
            "/api/v1/auth/register",
            none,
            json!({"email": "Ops@Example.com", "password": "correct horse", "name": "Ops"}),
        )
        .await;
    assert_eq!(code, 201, "{reg}");
    let (code, login) = s
        .post(
            "/api/v1/auth/login",
            none,
            json!({"email": "ops@example.com", "password": "correct horse"}),
        )
        .await;
    assert_eq!(code, 200, "{login}");
    let token = login["data"]["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let jwt = ("authorization", bearer.as_str());
    assert_error(
        &s.post(
            "/api/v1/auth/login",
            none,
            json!({"email": "ops@example.com", "password": "wrong one"}),
        )
        .await,
        401,
        "INVALID_CREDENTIALS",
    );
    assert_error(
        &s.post(
            "/api/v1/auth/register",
            none,
            json!({"email": "ops@example.com", "password": "another pw"}),
        )
        .await,
        409,
        "EMAIL_TAKEN",
    );
    let (code, _) = s
        .post(
            "/api/v1/auth/login",
            none,
            json!({"email": "ops@example.com", "password": "correct horse"}),
        )
        .await;
    assert_eq!(code, 200, "fifth auth call in the window");
    assert_error(
        &s.post(
            "/api/v1/auth/login",
            none,
            json!({"email": "ops@example.com", "password": "correct horse"}),
        )
        .await,
        429,
        "TOO_MANY_REQUESTS",
    );

    // User API keys: JWT only; the raw key is shown once, never listed.
    assert_error(
        &s.post("/api/v1/auth/api-keys", none, json!({})).await,
        401,
        "NO_TOKEN",
    );
    assert_error(
        &s.post(
            "/api/v1/auth/api-keys",
            ("authorization", "Bearer nope.nope.nope"),
            json!({}),
        )
        .await,
        401,
        "INVALID_TOKEN",
    );
    let (code, k) = s
        .post("/api/v1/auth/api-keys", jwt, json!({"name": "backend"}))
        .await;
    assert_eq!(code, 201, "{k}");
    let user_key = k["data"]["apiKey"].as_str().unwrap().to_owned();
    let (_, list) = s.get("/api/v1/auth/api-keys", jwt).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(&user_key),
        "the raw key is never listed"
    );
    let master = ("x-api-key", user_key.as_str());

    // Sessions: one with the user API key, one with the JWT; link both by QR.
    let (code, a) = s
        .post("/api/v1/sessions", master, json!({"name": "Customer 123"}))
        .await;
    assert_eq!(code, 201, "{a}");
    assert_eq!(a["data"]["status"], "pending");
    assert_eq!(a["data"]["message"], "Scan QR code to connect");
    let a_id = a["data"]["sessionId"].as_str().unwrap().to_owned();
    let a_key = a["data"]["apiKey"].as_str().unwrap().to_owned();
    let (_, b) = s.post("/api/v1/sessions", jwt, json!({"name": "B"})).await;
    let b_id = b["data"]["sessionId"].as_str().unwrap().to_owned();
    let b_key = b["data"]["apiKey"].as_str().unwrap().to_owned();
    link(&s, master, &a_id, "15550301001").await;
    let png = s
        .req(
            reqwest::Method::GET,
            &format!("/api/v1/sessions/{b_id}/qr?format=png"),
        )
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let svg = s
        .req(
            reqwest::Method::GET,
            &format!("/api/v1/sessions/{b_id}/qr?format=svg"),
        )
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert!(svg.text().await.unwrap().contains("<svg"));
    link(&s, jwt, &b_id, "15550301002").await;
    let (_, st) = s.get(&format!("/api/v1/sessions/{a_id}/status"), jwt).await;
    assert_eq!(st["data"]["phoneNumber"], "15550301001");
    assert!(st["data"]["lastConnectedAt"].is_string());

    // Messaging with the session key, and with the user key plus x-session-id.
    let (code, m1) = s
        .post(
            "/api/v1/messages/send",
            ("x-api-key", &a_key),
            json!({"to": "+1 555-030-1002", "text": "hi from A"}),
        )
        .await;
    assert_eq!(code, 201, "{m1}");
    let mut with_session = s
        .req(reqwest::Method::POST, "/api/v1/messages/send")
        .header("x-api-key", &user_key)
        .header("x-session-id", &a_id)
        .header("content-type", "application/json")
        .body(json!({"to": "15550301002", "text": "hi again"}).to_string());
    let (code, _) = read(with_session.send().await.unwrap()).await;
    assert_eq!(code, 201);
    assert_error(
        &s.post(
            "/api/v1/messages/send",
            master,
            json!({"to": "15550301002", "text": "x"}),
        )
        .await,
        400,
        "SESSION_ID_REQUIRED",
    );
    assert_error(
        &s.post(
            "/api/v1/messages/send",
            none,
            json!({"to": "15550301002", "text": "x"}),
        )
        .await,
        401,
        "NO_API_KEY",
    );
    assert_error(
        &s.post(
            "/api/v1/messages/send",
            ("x-api-key", &a_key),
            json!({"to": "12345", "text": "x"}),
        )
        .await,
        400,
        "INVALID_PHONE_NUMBER",
    );
    with_session = s
        .req(reqwest::Method::POST, "/api/v1/messages/send-image")
        .header("x-api-key", &a_key);
    let (ct, body) = Multipart::new()
        .text("to", "15550301002")
        .text("caption", "a picture")
        .file("image", "p.jpg", "image/jpeg", files::JPEG)
        .finish();
    let (code, img) = read(
        with_session
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{img}");

    // B's history holds what A sent; A's shows its messages delivered.
    let hist = eventually(20, "B's history", || async {
        let (_, h) = s
            .get(
                "/api/v1/messages/history?limit=50&offset=0",
                ("x-api-key", &b_key),
            )
            .await;
        let msgs = h["data"]["messages"].as_array().unwrap().clone();
        (msgs.iter().filter(|m| m["direction"] == "inbound").count() == 3).then_some(msgs)
    })
    .await;
    assert!(
        hist.iter()
            .any(|m| m["text"] == "hi from A" && m["from"] == "15550301001")
    );
    assert!(
        hist.iter()
            .any(|m| m["type"] == "image" && m["text"] == "a picture")
    );
    eventually(20, "A's messages delivered", || async {
        let (_, h) = s
            .get("/api/v1/messages/history", ("x-api-key", &a_key))
            .await;
        let msgs = h["data"]["messages"].as_array().unwrap().clone();
        (msgs.len() == 3
            && msgs
                .iter()
                .all(|m| m["status"] == "delivered" || m["status"] == "read"))
        .then_some(())
    })
    .await;

    // One account under both surfaces: the user's RK credentials drive the same session.
    let (code, creds) = s
        .post("/api/v1/auth/credentials/rotate", jwt, json!({}))
        .await;
    assert_eq!(code, 200, "{creds}");
    let (_, read_back) = s.get("/api/v1/auth/credentials", jwt).await;
    assert_eq!(read_back["data"]["apiSecret"], creds["data"]["apiSecret"]);
    let (_, a_status) = s.get(&format!("/api/v1/sessions/{a_id}/status"), jwt).await;
    let rk = TestProject {
        api_key: creds["data"]["apiKey"].as_str().unwrap().to_owned(),
        api_secret: creds["data"]["apiSecret"].as_str().unwrap().to_owned(),
        device_code: a_status["data"]["deviceCode"].as_str().unwrap().to_owned(),
        ..TestProject::default()
    };
    let (code, sent) = t
        .send_json(
            &rk,
            json!({"recipient": "15550301002", "message": "via RK"}),
        )
        .await;
    assert_eq!(code, 201, "{sent}");
    eventually(20, "RK message delivered", || async {
        let (_, st) = t.status(&rk, sent["data"]["id"].as_str().unwrap()).await;
        (st["data"]["status"] == "delivered" || st["data"]["status"] == "read").then_some(())
    })
    .await;

    // The session cap (10 for a registered account).
    for i in 0..8 {
        let (code, b) = s
            .post(
                "/api/v1/sessions",
                master,
                json!({"name": format!("extra {i}")}),
            )
            .await;
        assert_eq!(code, 201, "{b}");
    }
    assert_error(
        &s.post("/api/v1/sessions", master, json!({"name": "one too many"}))
            .await,
        403,
        "SESSION_LIMIT_REACHED",
    );

    // Delete: gone for both surfaces, and its key stops working.
    let del = s
        .req(reqwest::Method::DELETE, &format!("/api/v1/sessions/{b_id}"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_error(
        &s.get(&format!("/api/v1/sessions/{b_id}/status"), jwt).await,
        404,
        "SESSION_NOT_FOUND",
    );
    assert_error(
        &s.post(
            "/api/v1/messages/send",
            ("x-api-key", &b_key),
            json!({"to": "15550301001", "text": "x"}),
        )
        .await,
        401,
        "INVALID_API_KEY",
    );

    // Restart while WhatsApp holds logins: A's status is not the stored "connected" of the
    // stopped process; it reads connecting until A is let in.
    t.wa().hold_logins(true).await.unwrap();
    let t = t.stop().await.node("node-sak-2").start().await;
    let s = Sak { t: &t };
    let (code, st) = s.get(&format!("/api/v1/sessions/{a_id}/status"), jwt).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["data"]["status"], "connecting", "{st}");
    assert_eq!(st["data"]["connected"], false, "{st}");
    t.wa().hold_logins(false).await.unwrap();
    eventually(20, "A connected again", || async {
        let (_, b) = s.get(&format!("/api/v1/sessions/{a_id}/status"), jwt).await;
        (b["data"]["connected"] == true).then_some(())
    })
    .await;
    t.shutdown().await;
}

/// Inbound media is downloadable by its reference, then, past the retention period, its bytes
/// are dropped (`410 MEDIA_EXPIRED`) while the message stays in the history; a message still
/// waiting to be sent keeps its file.
/// Creates racing for a project's last session places: the count and the insert are one
/// transaction under the project's lock, so exactly the cap succeed and every other create
/// is refused with `SESSION_LIMIT_REACHED`, however the requests interleave.
async fn concurrent_creates_stop_at_the_session_cap(db: TestDb) {
    // A registered account's cap.
    const CAP: usize = 10;
    let t = TestApp::init(db)
        .with_wasim()
        .node("node-cap")
        .start()
        .await;
    let s = Sak { t: &t };
    let bearer = s.register("cap@example.com").await;
    let jwt = ("authorization", bearer.as_str());

    let creates = (0..3 * CAP).map(|i| {
        let s = &s;
        async move {
            s.post(
                "/api/v1/sessions",
                jwt,
                json!({"name": format!("racer {i}")}),
            )
            .await
        }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|(code, _)| *code == 201).count();
    assert_eq!(created, CAP, "exactly the cap is created: {answers:?}");
    for refused in answers.iter().filter(|(code, _)| *code != 201) {
        assert_error(refused, 403, "SESSION_LIMIT_REACHED");
    }
    let (code, list) = s.get("/api/v1/sessions", jwt).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), CAP, "{list}");
    assert_error(
        &s.post("/api/v1/sessions", jwt, json!({"name": "after the race"}))
            .await,
        403,
        "SESSION_LIMIT_REACHED",
    );
    t.shutdown().await;
}

async fn media_is_served_then_expires(db: TestDb) {
    use wagate::storage::{inbound, media};
    use wagate::values::SessionId;
    // Long enough for the first download on a loaded machine.
    let retention = std::time::Duration::from_secs(15);
    let t = TestApp::init(db)
        .with_wasim()
        .node("node-media")
        .configure(|s| {
            s.media_retention = Some(retention);
            s.janitor_interval = std::time::Duration::from_millis(200);
        })
        .start()
        .await;
    let s = Sak { t: &t };
    let bearer = s.register("media@example.com").await;
    let jwt = ("authorization", bearer.as_str());
    let mut sessions = Vec::new();
    for name in ["A", "B", "C"] {
        let (code, b) = s
            .post("/api/v1/sessions", jwt, json!({ "name": name }))
            .await;
        assert_eq!(code, 201, "{b}");
        let id = b["data"]["sessionId"].as_str().unwrap().to_owned();
        let key = b["data"]["apiKey"].as_str().unwrap().to_owned();
        sessions.push((id, key));
    }
    let [(a, a_key), (b, b_key), (_c, c_key)] = &sessions[..] else {
        unreachable!()
    };
    let (pa, pb) = ("15550305001", "15550305002");
    link(&s, jwt, a, pa).await;
    link(&s, jwt, b, pb).await;

    let send_image = |key: String, to: &'static str| {
        let (ct, body) = Multipart::new()
            .text("to", to)
            .text("caption", "kept for a while")
            .file("image", "p.jpg", "image/jpeg", files::JPEG)
            .finish();
        let req = s
            .req(reqwest::Method::POST, "/api/v1/messages/send-image")
            .header("x-api-key", key)
            .header("content-type", ct)
            .body(body);
        async move { read(req.send().await.unwrap()).await }
    };
    let (code, sent) = send_image(a_key.clone(), pb).await;
    assert_eq!(code, 201, "{sent}");
    // C is not linked: its message waits, and keeps its file past the retention period.
    let (code, waiting) = send_image(c_key.clone(), pb).await;
    assert_eq!(code, 201, "{waiting}");

    let db = t.db.open();
    let inbound = eventually(20, "B's inbound image", || {
        let (db, b) = (db.clone(), b.clone());
        async move {
            let rows = db
                .run(move |c| inbound::list_inbound(c, &SessionId::from(b), 50, 0))
                .await
                .unwrap();
            rows.into_iter().find(|r| r.kind == "image")
        }
    })
    .await;
    let media_id = inbound.media_id.expect("inbound media stored");
    let download = || {
        s.req(reqwest::Method::GET, &format!("/api/v1/media/{media_id}"))
            .header(jwt.0, jwt.1)
            .send()
    };
    let resp = download().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.bytes().await.unwrap(), files::JPEG, "byte-identical");
    assert_error(
        &s.get("/api/v1/media/no-such-media", jwt).await,
        404,
        "MEDIA_NOT_FOUND",
    );

    // Watched in the database: polling the endpoint would spend the per-IP request budget.
    eventually(40, "the media to expire", || {
        let (db, id) = (db.clone(), media_id.clone());
        async move {
            let bytes = db.run(move |c| media::media_bytes(c, &id)).await.unwrap();
            bytes.is_none().then_some(())
        }
    })
    .await;
    assert_error(&read(download().await.unwrap()).await, 410, "MEDIA_EXPIRED");
    let (_, history) = s
        .get("/api/v1/messages/history", ("x-api-key", b_key))
        .await;
    assert!(
        history["data"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "image" && m["direction"] == "inbound"),
        "the message stays in the history: {history}"
    );
    let media_of = |message_id: String| {
        let db = db.clone();
        async move {
            db.run(move |c| {
                use diesel::prelude::*;
                use wagate::storage::schema::messages;
                let mid: Option<String> = wagate::db_run!(c, |c| messages::table
                    .filter(messages::id.eq(&message_id))
                    .select(messages::media_id)
                    .first(c))?;
                media::media_bytes(c, &mid.expect("media message"))
            })
            .await
            .unwrap()
        }
    };
    let sent_id = sent["data"]["messageId"].as_str().unwrap().to_owned();
    // Once sent (its server ack may be recorded a moment after B got it), at the next run.
    eventually(10, "the sent file to be dropped", || {
        let sent = media_of(sent_id.clone());
        async move { sent.await.is_none().then_some(()) }
    })
    .await;
    let waiting_id = waiting["data"]["messageId"].as_str().unwrap().to_owned();
    let kept = media_of(waiting_id)
        .await
        .expect("the waiting file is kept");
    assert_eq!(kept.data, files::JPEG);
    t.shutdown().await;
}
