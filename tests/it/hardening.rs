//! What a hostile client can no longer do: grow the metrics, exhaust memory with password
//! hashing or with bodies held before authentication, keep silent connections open, manage
//! an account with a session key, sign with the date alone, replay a signature where the
//! project refuses it, or spoof its address to the per-IP limits.

use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wagate::client;
use wagate::transport::limits::HttpSettings;

use crate::on_both_backends;
use crate::sak_api::Sak;
use crate::support::{TestApp, TestDb, assert_error, read};

on_both_backends!(session_keys_act_only_for_their_session, replay_guard);

/// A gateway on a SQLite database with `http` as its HTTP limits.
async fn with_http(http: HttpSettings) -> TestApp {
    TestApp::init(TestDb::sqlite())
        .node("node-hard")
        .configure(|s| s.http = http)
        .start()
        .await
}

/// Reads what the server answers on a raw connection until it closes or `secs` pass.
async fn answer(conn: &mut TcpStream, secs: u64) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

fn addr(t: &TestApp) -> std::net::SocketAddr {
    t.server.addr
}

async fn metrics_text(t: &TestApp) -> String {
    let r = t.http.get(t.url("/metrics")).send().await.unwrap();
    r.text().await.unwrap()
}

/// Unknown paths under the gRPC prefixes, and unknown methods, add no metric series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_are_bounded() {
    let t = TestApp::init(TestDb::sqlite()).start().await;
    for i in 0..50 {
        let path = format!("/wagate.v1.Probe{i}/Method");
        let _ = t.http.get(t.url(&path)).send().await.unwrap();
        let _ = t
            .http
            .post(t.url(&format!("/grpc.probe{i}/X")))
            .header("content-type", "application/grpc-web")
            .send()
            .await
            .unwrap();
        let method = reqwest::Method::from_bytes(format!("PROBE{i}").as_bytes()).unwrap();
        let _ = t
            .http
            .request(method, t.url("/health"))
            .send()
            .await
            .unwrap();
    }
    let metrics = metrics_text(&t).await;
    assert!(!metrics.contains("Probe"), "a probe path became a label");
    assert!(!metrics.contains("probe"), "a probe path became a label");
    assert!(!metrics.contains("PROBE"), "a probe method became a label");
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
}

/// Histogram samples are folded on an interval even when nothing scrapes `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_upkeep_runs_without_scrapes() {
    let t = TestApp::init(TestDb::sqlite()).start().await;
    tokio::time::sleep(wagate::transport::metrics::UPKEEP_INTERVAL + Duration::from_secs(1)).await;
    let metrics = metrics_text(&t).await;
    assert!(
        metrics.contains("wagate_metrics_upkeep_runs_total"),
        "no upkeep ran: {metrics}"
    );
}

/// With one hashing slot and one waiter, a burst of logins from many addresses gets
/// `503 SERVER_BUSY` with `Retry-After` for the excess instead of hashing them all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded() {
    let t = TestApp::init(TestDb::sqlite())
        .node("node-hash")
        .configure(|s| {
            s.hashing = wagate::domain::accounts::HashingSettings {
                concurrency: 1,
                queue: 1,
                wait: Duration::from_millis(50),
            }
        })
        .start()
        .await;
    let s = Sak { t: &t };
    s.register("burst@example.com").await;
    let logins = (2..18u8).map(|i| {
        let http = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, i]))
            .build()
            .unwrap();
        let url = t.url("/api/v1/auth/login");
        async move {
            let r = http
                .post(url)
                .json(&json!({"email": "burst@example.com", "password": "correct horse"}))
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").is_some();
            let (code, body) = read(r).await;
            (code, body["code"].as_str().map(str::to_owned), retry)
        }
    });
    let results = futures::future::join_all(logins).await;
    let busy: Vec<_> = results.iter().filter(|(c, _, _)| *c == 503).collect();
    assert!(
        !busy.is_empty(),
        "every login was hashed at once: {results:?}"
    );
    for (code, err, retry) in &results {
        match code {
            200 => {}
            503 => assert_eq!((err.as_deref(), *retry), (Some("SERVER_BUSY"), true)),
            other => panic!("unexpected {other}: {results:?}"),
        }
    }
    assert!(results.iter().any(|(c, _, _)| *c == 200), "{results:?}");
}

/// An unknown key is refused from the headers, before its 11 MB body arrives, on REST and
/// on grpc-web alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_refused_before_the_body() {
    let t = TestApp::init(TestDb::sqlite()).start().await;
    let ts = client::unix_now();
    let heads = [
        format!(
            "POST /api/v1/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-api-key: wgk_nobody\r\nx-timestamp: {ts}\r\nx-signature: {}\r\n\
             x-device-code: RK-1\r\ncontent-length: 11000000\r\n\r\n",
            "0".repeat(64)
        ),
        format!(
            "POST /wagate.v1.MessagingService/SendMessage HTTP/1.1\r\nhost: x\r\n\
             content-type: application/grpc-web+proto\r\nx-api-key: wgk_nobody\r\n\
             x-timestamp: {ts}\r\nx-signature: {}\r\ncontent-length: 11000000\r\n\r\n",
            "0".repeat(64)
        ),
    ];
    for head in heads {
        let mut conn = TcpStream::connect(addr(&t)).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&[0u8; 1024]).await.unwrap();
        let (got, _) = answer(&mut conn, 5).await;
        assert!(
            got.starts_with("HTTP/1.1 401") || got.contains("grpc-status: 16"),
            "no refusal before the body: {got:?}"
        );
        assert!(
            got.contains("INVALID_API_KEY") || got.contains("unknown API key"),
            "{got}"
        );
    }
}

/// A body that stalls is cut at the body deadline with `408 REQUEST_TIMEOUT`; a connection
/// that never speaks is closed after the first-byte timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_silent_connections_are_cut() {
    let t = with_http(HttpSettings {
        body_timeout: Duration::from_secs(1),
        first_byte_timeout: Duration::from_secs(1),
        ..HttpSettings::default()
    })
    .await;
    let p = t.create_project().await;
    let ts = client::unix_now();
    let head = format!(
        "POST /api/v1/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-api-key: {}\r\nx-timestamp: {ts}\r\nx-signature: {}\r\nx-device-code: {}\r\n\
         content-length: 100000\r\n\r\n{{\"recipient\":",
        p.api_key,
        "0".repeat(64),
        p.device_code
    );
    let mut conn = TcpStream::connect(addr(&t)).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let (got, closed) = answer(&mut conn, 5).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(got.contains("REQUEST_TIMEOUT"), "{got}");
    assert!(closed, "the connection stayed open after the 408");

    let mut silent = TcpStream::connect(addr(&t)).await.unwrap();
    let (got, closed) = answer(&mut silent, 5).await;
    assert!(closed && got.is_empty(), "a silent connection stayed open");
    assert!(t.message_ids(&p).await.is_empty());
}

/// Large bodies in transit share a budget: while one holds it, the next waits, then gets
/// `503 SERVER_BUSY`; small requests pass meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_share_a_budget() {
    let t = with_http(HttpSettings {
        body_budget_bytes: 1024 * 1024,
        ..HttpSettings::default()
    })
    .await;
    let p = t.create_project().await;
    let big = |len: usize| {
        format!(
            "POST /api/v1/send HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-api-key: {}\r\nx-timestamp: {}\r\nx-signature: {}\r\nx-device-code: {}\r\n\
             content-length: {len}\r\n\r\n",
            p.api_key,
            client::unix_now(),
            "0".repeat(64),
            p.device_code
        )
    };
    let len = 1000 * 1024;
    let mut holder = TcpStream::connect(addr(&t)).await.unwrap();
    holder.write_all(big(len).as_bytes()).await.unwrap();
    holder.write_all(&vec![b' '; len - 1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = TcpStream::connect(addr(&t)).await.unwrap();
    second.write_all(big(len).as_bytes()).await.unwrap();
    second.write_all(&vec![b' '; len - 1]).await.unwrap();
    let (code, _) = read(t.http.get(t.url("/health")).send().await.unwrap()).await;
    assert_eq!(code, 200, "small requests pass while the budget is taken");
    let (got, _) = answer(&mut second, 10).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got:?}");
    assert!(got.contains("SERVER_BUSY"), "{got}");
    // The holder finishes and is judged on its signature, as any request.
    holder.write_all(b" ").await.unwrap();
    let (got, _) = answer(&mut holder, 5).await;
    assert!(got.starts_with("HTTP/1.1 401"), "{got:?}");
}

/// At most `max_connections` are open: the next waits until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped() {
    let t = with_http(HttpSettings {
        max_connections: 3,
        ..HttpSettings::default()
    })
    .await;
    // The test client's own pool counts too: use raw connections only.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&t)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr(&t)).await.unwrap();
    extra
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = answer(&mut extra, 1).await;
    assert!(got.is_empty(), "served beyond the cap: {got}");
    held.pop();
    let (got, _) = answer(&mut extra, 5).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
}

/// What hyper refuses before any handler runs still gets the error envelope; gRPC over
/// HTTP/1.1 gets a clear 400; a device code that is not text is named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_carry_the_envelope() {
    let t = TestApp::init(TestDb::sqlite()).start().await;
    let cases = [
        (
            format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000)),
            "414",
            "URI_TOO_LONG",
        ),
        (
            format!(
                "GET /health HTTP/1.1\r\nhost: x\r\n{}\r\n",
                (0..150)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>()
            ),
            "431",
            "HEADERS_TOO_LARGE",
        ),
        (
            "GET /health HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_owned(),
            "400",
            "MALFORMED_REQUEST",
        ),
    ];
    for (req, status, code) in cases {
        let mut conn = TcpStream::connect(addr(&t)).await.unwrap();
        conn.write_all(req.as_bytes()).await.unwrap();
        let (got, _) = answer(&mut conn, 5).await;
        assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{got:?}");
        let body = got.split_once("\r\n\r\n").map(|b| b.1).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{got}"));
        assert_eq!(
            (v["success"].as_bool(), v["code"].as_str()),
            (Some(false), Some(code))
        );
    }
    let r = t
        .http
        .post(t.url("/wagate.v1.MessagingService/SendMessage"))
        .header("content-type", "application/grpc")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    let got = read(r).await;
    assert_error(&got, 400, "VALIDATION_ERROR");
    assert!(
        got.1["message"].as_str().unwrap().contains("grpc-web"),
        "{got:?}"
    );

    let p = t.create_project().await;
    // grpc-web-text that is not base64: said so, not "message too large".
    let r = t
        .http
        .post(t.url("/wagate.v1.MessagingService/SendMessage"))
        .header("content-type", "application/grpc-web-text")
        .header("x-api-key", &p.api_key)
        .header("x-timestamp", client::unix_now())
        .header("x-signature", "0".repeat(64))
        .body("!!! not base64 !!!")
        .send()
        .await
        .unwrap();
    let grpc = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (status, message) = (grpc("grpc-status"), grpc("grpc-message"));
    assert_eq!(status, "3", "{message}");
    assert!(!message.contains("too large"), "{message}");
    let body = json!({"recipient": "6281234567890", "message": "m"}).to_string();
    let mut req = t
        .signed(reqwest::Method::POST, "/api/v1/send", &p, body.into_bytes())
        .header("content-type", "application/json")
        .build()
        .unwrap();
    req.headers_mut().insert(
        "x-device-code",
        reqwest::header::HeaderValue::from_bytes(b"RK-\xff").unwrap(),
    );
    let r = t.http.execute(req).await.unwrap();
    let got = read(r).await;
    assert_error(&got, 400, "VALIDATION_ERROR");
    assert!(got.1["message"].as_str().unwrap().contains("x-device-code"));
}

/// `/metrics` with a token needs it; with its own listener it is not on the API port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_private() {
    let t = with_http(HttpSettings {
        metrics_token: Some("scrape-me".into()),
        ..HttpSettings::default()
    })
    .await;
    assert_error(
        &read(t.http.get(t.url("/metrics")).send().await.unwrap()).await,
        401,
        "INVALID_TOKEN",
    );
    let r = t
        .http
        .get(t.url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t2 = with_http(HttpSettings {
        metrics_listen: Some(port),
        ..HttpSettings::default()
    })
    .await;
    assert_error(
        &read(t2.http.get(t2.url("/metrics")).send().await.unwrap()).await,
        404,
        "NOT_FOUND",
    );
    let r = t2
        .http
        .get(format!("http://{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `X-Forwarded-For` moves a client to another per-IP bucket only through a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_only_from_trusted_proxies() {
    let login = |t: &TestApp, xff: String| {
        t.http
            .post(t.url("/api/v1/auth/login"))
            .header("x-forwarded-for", xff)
            .json(&json!({"email": "nobody@example.com", "password": "whatever1"}))
            .send()
    };
    // Untrusted: a fresh X-Forwarded-For per request does not escape the 5/min auth limit.
    let t = TestApp::init(TestDb::sqlite()).start().await;
    let mut codes = Vec::new();
    for i in 0..7 {
        codes.push(
            login(&t, format!("198.51.100.{i}"))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 2, "{codes:?}");
    // Trusted loopback proxy: each forwarded client has its own bucket.
    let t = with_http(HttpSettings {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..HttpSettings::default()
    })
    .await;
    for i in 0..7 {
        let code = login(&t, format!("203.0.113.9, 198.51.100.{i}"))
            .await
            .unwrap()
            .status();
        assert_eq!(code, 401, "client {i} was limited by others' requests");
    }
}

/// A session key is refused everywhere but its own session's messaging, history, status,
/// QR and webhook test; the JWT and user keys manage the account.
async fn session_keys_act_only_for_their_session(db: TestDb) {
    let t = TestApp::init(db)
        .with_wasim()
        .node("node-scope")
        .start()
        .await;
    let s = Sak { t: &t };
    let bearer = s.register("scope@example.com").await;
    let jwt = ("authorization", bearer.as_str());
    let (code, key) = s.post("/api/v1/auth/api-keys", jwt, json!({})).await;
    assert_eq!(code, 201, "{key}");
    let user_key = key["data"]["apiKey"].as_str().unwrap().to_owned();
    let mut sessions = Vec::new();
    for name in ["a", "b"] {
        let (code, b) = s.post("/api/v1/sessions", jwt, json!({"name": name})).await;
        assert_eq!(code, 201, "{b}");
        sessions.push((
            b["data"]["sessionId"].as_str().unwrap().to_owned(),
            b["data"]["apiKey"].as_str().unwrap().to_owned(),
        ));
    }
    let (a, a_key) = &sessions[0];
    let (b, _) = &sessions[1];
    let (code, hook) = s
        .post(
            "/api/v1/webhooks",
            jwt,
            json!({"url": "https://hooks.example.com/x", "sessionId": a}),
        )
        .await;
    assert_eq!(code, 201, "{hook}");
    let hook = hook["data"]["webhookId"].as_str().unwrap().to_owned();

    use reqwest::Method as M;
    // (method, path, body, a session key of session `a` may)
    let routes: Vec<(M, String, serde_json::Value, bool)> = vec![
        (M::GET, "/api/v1/sessions".into(), json!(null), false),
        (
            M::POST,
            "/api/v1/sessions".into(),
            json!({"name": "c"}),
            false,
        ),
        (
            M::GET,
            format!("/api/v1/sessions/{a}/status"),
            json!(null),
            true,
        ),
        (
            M::GET,
            format!("/api/v1/sessions/{b}/status"),
            json!(null),
            false,
        ),
        (
            M::GET,
            format!("/api/v1/sessions/{a}/qr"),
            json!(null),
            true,
        ),
        (
            M::GET,
            format!("/api/v1/sessions/{b}/qr"),
            json!(null),
            false,
        ),
        (
            M::POST,
            format!("/api/v1/sessions/{b}/pairing-code"),
            json!({"phoneNumber": "15550001111"}),
            false,
        ),
        (
            M::POST,
            format!("/api/v1/sessions/{a}/restart"),
            json!(null),
            false,
        ),
        (
            M::POST,
            format!("/api/v1/sessions/{b}/logout"),
            json!(null),
            false,
        ),
        (
            M::DELETE,
            format!("/api/v1/sessions/{b}"),
            json!(null),
            false,
        ),
        (
            M::POST,
            "/api/v1/webhooks".into(),
            json!({"url": "https://hooks.example.com/all"}),
            false,
        ),
        (M::GET, "/api/v1/webhooks".into(), json!(null), false),
        (
            M::GET,
            format!("/api/v1/webhooks/{hook}"),
            json!(null),
            false,
        ),
        (
            M::PATCH,
            format!("/api/v1/webhooks/{hook}"),
            json!({"enabled": false}),
            false,
        ),
        (
            M::POST,
            format!("/api/v1/webhooks/{hook}/rotate-secret"),
            json!({}),
            false,
        ),
        (
            M::GET,
            format!("/api/v1/webhooks/{hook}/deliveries"),
            json!(null),
            false,
        ),
        (
            M::POST,
            format!("/api/v1/webhooks/{hook}/redeliver-failed"),
            json!({}),
            false,
        ),
        (
            M::GET,
            "/api/v1/media/some-media".into(),
            json!(null),
            false,
        ),
        (
            M::DELETE,
            format!("/api/v1/webhooks/{hook}"),
            json!(null),
            false,
        ),
        (
            M::POST,
            "/api/v1/messages/send".into(),
            json!({"to": "15550002222", "text": "hi"}),
            true,
        ),
        (M::GET, "/api/v1/messages/history".into(), json!(null), true),
        (M::POST, "/api/v1/webhooks/test".into(), json!({}), true),
    ];
    let call = |m: &M, path: &str, body: &serde_json::Value, auth: (&str, &str), sid: &str| {
        let mut r = s.req(m.clone(), path).header(auth.0, auth.1);
        if !sid.is_empty() {
            r = r.header("x-session-id", sid);
        }
        if !body.is_null() {
            r = r.json(body);
        }
        r.send()
    };
    for (m, path, body, allowed) in &routes {
        let got = read(call(m, path, body, ("x-api-key", a_key), "").await.unwrap()).await;
        if *allowed {
            assert!(got.0 < 400, "session key refused on {m} {path}: {got:?}");
        } else {
            assert_error(&got, 403, "FORBIDDEN");
        }
    }
    // The account's own credentials may do all of it (the delete of `b` and of the webhook
    // come last in the list, so they are done once each).
    for auth in [jwt, ("x-api-key", user_key.as_str())] {
        for (m, path, body, _) in &routes {
            let messaging = path.contains("/messages/") || path.ends_with("/webhooks/test");
            if (auth.0 == "x-api-key" && m == M::DELETE) || (auth.0 == "authorization" && messaging)
            {
                continue;
            }
            let got = read(call(m, path, body, auth, a).await.unwrap()).await;
            assert!(
                got.0 != 401 && got.0 != 403,
                "{} refused on {m} {path}: {got:?}",
                auth.0
            );
        }
    }
}

/// With the replay guard on, a signature works once; without it, a captured request works
/// again within the window (what the RK scheme allows by design).
async fn replay_guard(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project().clone();
    let ts = client::unix_now();
    let sig = client::rk_signature(&p.api_key, &p.api_secret, &ts, b"");
    let get = || {
        t.http
            .get(t.url("/api/v1/messages"))
            .header("X-API-KEY", &p.api_key)
            .header("X-TIMESTAMP", &ts)
            .header("X-SIGNATURE", &sig)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(
        get().await.unwrap().status(),
        200,
        "replays pass with the guard off"
    );

    let admin = t.admin();
    let project_id = admin.list_projects().await.unwrap()[0].project_id.clone();
    admin.set_refuse_replays(&project_id, true).await.unwrap();
    // The credential cache keeps the project's settings up to 30 s: a fresh server reads
    // them at once.
    let t = t.stop().await.node("node-replay").start().await;
    let ts = client::unix_now();
    let sig = client::rk_signature(&p.api_key, &p.api_secret, &ts, b"");
    let get = |path: &'static str| {
        t.http
            .get(t.url(path))
            .header("X-API-KEY", &p.api_key)
            .header("X-TIMESTAMP", &ts)
            .header("X-SIGNATURE", &sig)
            .send()
    };
    assert_eq!(get("/api/v1/messages").await.unwrap().status(), 200);
    assert_error(
        &read(get("/api/v1/messages").await.unwrap()).await,
        401,
        "SIGNATURE_REPLAYED",
    );
    // An empty-body GET signature is refused on every other GET path too, once used.
    assert_error(
        &read(get("/api/v1/status/x").await.unwrap()).await,
        401,
        "SIGNATURE_REPLAYED",
    );
    // Sending twice the same signed body: the second is refused, nothing stored twice.
    let body = json!({"recipient": "6281234567890", "message": "once"}).to_string();
    let req = t
        .signed(
            reqwest::Method::POST,
            "/api/v1/send",
            &p,
            body.clone().into_bytes(),
        )
        .header("content-type", "application/json")
        .build()
        .unwrap();
    let again = req.try_clone().unwrap();
    assert_eq!(t.http.execute(req).await.unwrap().status(), 201);
    assert_error(
        &read(t.http.execute(again).await.unwrap()).await,
        401,
        "SIGNATURE_REPLAYED",
    );
    // (An RK GET signs only key and timestamp: two GETs in one second share a signature.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(t.message_ids(&p).await.len(), 1);
}
