//! The RK Connect REST contract, end to end against a real server and database.

use serde_json::json;
use wagate::client::{self, Multipart};

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, assert_error, files, read};

on_both_backends!(
    rk_text_example_and_status,
    rk_media_examples,
    media_is_judged_by_bytes,
    auth_failures,
    qontak_hmac_scheme,
    idempotency,
    rate_limit_cannot_be_overshot,
    monthly_quota,
    tenant_isolation,
    malformed_input_is_rejected_and_creates_nothing,
    accepted_messages_survive_restart,
);

fn is_rfc3339_with_offset(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        && (s.ends_with("+00:00") || s.contains('+') || s.rfind('-') > Some(10))
}

async fn rk_text_example_and_status(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    // The document's exact JSON body, plus the optional payload.
    let (code, body) = t
        .send_json(p, json!({"recipient": "6281234567890", "type": "text", "message": "Hello from RK Connect", "payload": {"order_id": 42, "tags": ["a"]}}))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["status"], "queued");
    assert_eq!(body["data"]["device"], p.device_code.as_str());
    assert_eq!(body["meta"]["server_id"], "node-test");
    let id = body["data"]["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());

    let (code, st) = t.status(p, id).await;
    assert_eq!(code, 200, "{st}");
    let d = &st["data"];
    assert_eq!(d["id"], id);
    assert_eq!(d["status"], "queued");
    assert_eq!(d["recipient"], "6281234567890");
    assert_eq!(d["device_code"], p.device_code.as_str());
    assert!(
        is_rfc3339_with_offset(d["created_at"].as_str().unwrap()),
        "{d}"
    );
    for k in [
        "sent_at",
        "delivered_at",
        "read_at",
        "failed_at",
        "error_message",
    ] {
        assert!(
            d.get(k).is_some_and(|v| v.is_null()),
            "{k} must be present and null: {d}"
        );
    }
    assert_eq!(d["payload"], json!({"order_id": 42, "tags": ["a"]}));
    assert_eq!(st["meta"]["server_id"], "node-test");
}

async fn rk_media_examples(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let cases: [(&str, &str, &str, &[u8]); 6] = [
        ("image", "image.jpg", "image/jpeg", files::JPEG),
        ("image", "image.png", "image/png", files::PNG),
        ("document", "invoice.pdf", "application/pdf", files::PDF),
        ("video", "clip.mp4", "video/mp4", files::MP4),
        ("audio", "voice.ogg", "audio/ogg", files::OGG),
        ("audio", "song.mp3", "audio/mpeg", files::MP3),
    ];
    for (kind, name, mime, data) in cases {
        let form = Multipart::new()
            .text("recipient", "6281234567890")
            .text("type", kind)
            .text("message", "Promo today")
            .text("payload", r#"{"campaign":"nov"}"#)
            .file("media", name, mime, data);
        let (code, body) = t.send_form(p, form).await;
        assert_eq!(code, 201, "{kind} {name}: {body}");
        let (_, st) = t.status(p, body["data"]["id"].as_str().unwrap()).await;
        assert_eq!(st["data"]["type"], kind);
        assert_eq!(st["data"]["payload"]["campaign"], "nov");
    }
}

async fn media_is_judged_by_bytes(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let form = |kind: &str, name: &str, mime: &str, data: &[u8]| {
        Multipart::new()
            .text("recipient", "6281234567890")
            .text("type", kind)
            .file("media", name, mime, data)
    };
    // An executable that claims to be a JPEG.
    assert_error(
        &t.send_form(p, form("image", "cat.jpg", "image/jpeg", files::EXE))
            .await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    // A real PDF sent as an image.
    assert_error(
        &t.send_form(p, form("image", "x.jpg", "image/jpeg", files::PDF))
            .await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    // Over 10 MB.
    let mut big = files::JPEG.to_vec();
    big.resize(10 * 1024 * 1024 + 1, 0);
    assert_error(
        &t.send_form(p, form("image", "big.jpg", "image/jpeg", &big))
            .await,
        413,
        "MEDIA_TOO_LARGE",
    );
    // Media type without a file.
    let no_file = Multipart::new()
        .text("recipient", "6281234567890")
        .text("type", "image");
    assert_error(&t.send_form(p, no_file).await, 400, "MEDIA_REQUIRED");
    // Far over the request limit: rejected before it is read whole.
    let huge = vec![0u8; 12 * 1024 * 1024];
    assert_error(
        &t.send_form(p, form("image", "huge.jpg", "image/jpeg", &huge))
            .await,
        413,
        "PAYLOAD_TOO_LARGE",
    );
    assert!(
        t.message_ids(p).await.is_empty(),
        "rejected uploads must create nothing"
    );
}

async fn auth_failures(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let body = json!({"recipient": "6281234567890", "type": "text", "message": "hi"}).to_string();
    let post = || {
        t.http
            .post(t.url("/api/v1/send"))
            .header("Content-Type", "application/json")
            .body(body.clone())
    };
    let ts = client::unix_now();
    let good_sig = client::rk_signature(&p.api_key, &p.api_secret, &ts, body.as_bytes());

    assert_error(
        &read(post().send().await.unwrap()).await,
        401,
        "MISSING_API_KEY",
    );
    assert_error(
        &read(post().header("X-API-KEY", &p.api_key).send().await.unwrap()).await,
        401,
        "MISSING_SIGNATURE_HEADERS",
    );
    assert_error(
        &read(
            post()
                .header("X-API-KEY", &p.api_key)
                .header("X-TIMESTAMP", &ts)
                .send()
                .await
                .unwrap(),
        )
        .await,
        401,
        "MISSING_SIGNATURE_HEADERS",
    );
    let with = |key: &str, ts: &str, sig: &str| {
        post()
            .header("X-API-KEY", key)
            .header("X-TIMESTAMP", ts)
            .header("X-SIGNATURE", sig)
            .header("X-DEVICE-CODE", &p.device_code)
    };
    assert_error(
        &read(with("wgk_unknown", &ts, &good_sig).send().await.unwrap()).await,
        401,
        "INVALID_API_KEY",
    );
    assert_error(
        &read(with(&p.api_key, &ts, &"0".repeat(64)).send().await.unwrap()).await,
        401,
        "INVALID_SIGNATURE",
    );
    assert_error(
        &read(with(&p.api_key, &ts, "not-hex").send().await.unwrap()).await,
        401,
        "INVALID_SIGNATURE",
    );
    // Signed with another secret.
    let other = client::rk_signature(&p.api_key, "wgs_wrong", &ts, body.as_bytes());
    assert_error(
        &read(with(&p.api_key, &ts, &other).send().await.unwrap()).await,
        401,
        "INVALID_SIGNATURE",
    );
    // The signature of another body.
    let tampered = client::rk_signature(&p.api_key, &p.api_secret, &ts, b"{}");
    assert_error(
        &read(with(&p.api_key, &ts, &tampered).send().await.unwrap()).await,
        401,
        "INVALID_SIGNATURE",
    );
    // Outside the ±300 s window, correctly signed.
    let old = (chrono::Utc::now().timestamp() - 301).to_string();
    let old_sig = client::rk_signature(&p.api_key, &p.api_secret, &old, body.as_bytes());
    assert_error(
        &read(with(&p.api_key, &old, &old_sig).send().await.unwrap()).await,
        401,
        "TIMESTAMP_EXPIRED",
    );
    let future = (chrono::Utc::now().timestamp() + 400).to_string();
    let future_sig = client::rk_signature(&p.api_key, &p.api_secret, &future, body.as_bytes());
    assert_error(
        &read(with(&p.api_key, &future, &future_sig).send().await.unwrap()).await,
        401,
        "TIMESTAMP_EXPIRED",
    );
    // The status endpoint demands the same.
    let st = t
        .http
        .get(t.url("/api/v1/status/550e8400-e29b-41d4-a716-446655440000"))
        .header("X-API-KEY", &p.api_key);
    assert_error(
        &read(st.send().await.unwrap()).await,
        401,
        "MISSING_SIGNATURE_HEADERS",
    );
    // None of these created anything; the correctly signed request does.
    assert!(t.message_ids(p).await.is_empty());
    let (code, _) = read(with(&p.api_key, &ts, &good_sig).send().await.unwrap()).await;
    assert_eq!(code, 201);
    // No secret in any answer.
    let (_, e) = read(with(&p.api_key, &ts, &"0".repeat(64)).send().await.unwrap()).await;
    assert!(!e.to_string().contains(&p.api_secret));
}

async fn qontak_hmac_scheme(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let body =
        json!({"recipient": "6281234567890", "type": "text", "message": "via qontak"}).to_string();
    let post = |signed: client::QontakSigned, date: String| {
        let mut r = t
            .http
            .post(t.url("/api/v1/send?source=crm"))
            .header("Authorization", signed.authorization)
            .header("Date", date)
            .header("X-DEVICE-CODE", &p.device_code)
            .header("Content-Type", "application/json")
            .body(body.clone());
        if let Some(d) = signed.digest {
            r = r.header("Digest", d);
        }
        r
    };
    let sign = |key: &str, secret: &str, date: &str, path: &str| {
        client::qontak_authorization(key, secret, date, "POST", path, body.as_bytes())
    };
    let date = client::http_date_now();
    let auth = sign(&p.api_key, &p.api_secret, &date, "/api/v1/send?source=crm");
    let (code, b) = read(post(auth, date.clone()).send().await.unwrap()).await;
    assert_eq!(code, 201, "{b}");

    // Signed for another path (the request line is covered).
    let wrong_path = sign(&p.api_key, &p.api_secret, &date, "/api/v1/send");
    assert_error(
        &read(post(wrong_path, date.clone()).send().await.unwrap()).await,
        401,
        "INVALID_SIGNATURE",
    );
    let wrong_secret = sign(&p.api_key, "nope", &date, "/api/v1/send?source=crm");
    assert_error(
        &read(post(wrong_secret, date.clone()).send().await.unwrap()).await,
        401,
        "INVALID_SIGNATURE",
    );
    let stale = (chrono::Utc::now() - chrono::Duration::seconds(600))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let stale_auth = sign(&p.api_key, &p.api_secret, &stale, "/api/v1/send?source=crm");
    assert_error(
        &read(post(stale_auth, stale).send().await.unwrap()).await,
        401,
        "TIMESTAMP_EXPIRED",
    );
    let unknown = sign(
        "wgk_nobody",
        &p.api_secret,
        &date,
        "/api/v1/send?source=crm",
    );
    assert_error(
        &read(post(unknown, date.clone()).send().await.unwrap()).await,
        401,
        "INVALID_API_KEY",
    );
    let garbage = client::QontakSigned {
        authorization: "hmac garbage".into(),
        digest: None,
    };
    assert_error(
        &read(post(garbage, date.clone()).send().await.unwrap()).await,
        401,
        "INVALID_AUTHORIZATION_HEADER",
    );

    // A signature that binds only the date (explicitly, or by leaving `headers` out) opens
    // nothing: the request line must be signed.
    let date_only = |headers: &str| {
        let sig = wagate::crypto::base64_encode(&wagate::crypto::hmac_sha256(
            p.api_secret.as_bytes(),
            &[format!("date: {date}").as_bytes()],
        ));
        client::QontakSigned {
            authorization: format!(
                r#"hmac username="{}", algorithm="hmac-sha256",{headers} signature="{sig}""#,
                p.api_key
            ),
            digest: None,
        }
    };
    for headers in [r#" headers="date","#, ""] {
        assert_error(
            &read(post(date_only(headers), date.clone()).send().await.unwrap()).await,
            401,
            "INVALID_AUTHORIZATION_HEADER",
        );
    }
    // A body must be bound by its digest: without it, or with another body's digest, no.
    let mut undigested = sign(&p.api_key, &p.api_secret, &date, "/api/v1/send?source=crm");
    let sig = wagate::crypto::base64_encode(&wagate::crypto::hmac_sha256(
        p.api_secret.as_bytes(),
        &[format!("date: {date}\nPOST /api/v1/send?source=crm HTTP/1.1").as_bytes()],
    ));
    undigested.authorization = format!(
        r#"hmac username="{}", algorithm="hmac-sha256", headers="date request-line", signature="{sig}""#,
        p.api_key
    );
    undigested.digest = None;
    assert_error(
        &read(post(undigested, date.clone()).send().await.unwrap()).await,
        401,
        "INVALID_AUTHORIZATION_HEADER",
    );
    let other = client::qontak_authorization(
        &p.api_key,
        &p.api_secret,
        &date,
        "POST",
        "/api/v1/send?source=crm",
        b"{\"recipient\":\"6281234567890\",\"message\":\"other\"}",
    );
    assert_error(
        &read(post(other, date.clone()).send().await.unwrap()).await,
        401,
        "INVALID_SIGNATURE",
    );
    // A missing Date names the Date header, not RK's X-TIMESTAMP.
    let no_date = t
        .http
        .get(t.url("/api/v1/messages"))
        .header(
            "Authorization",
            sign(&p.api_key, &p.api_secret, &date, "/api/v1/messages").authorization,
        )
        .send()
        .await
        .unwrap();
    let got = read(no_date).await;
    assert_error(&got, 401, "MISSING_SIGNATURE_HEADERS");
    let msg = got.1["message"].as_str().unwrap();
    assert!(
        msg.contains("Date") && !msg.contains("X-TIMESTAMP"),
        "{msg}"
    );
    // A bodiless GET signs date and request line only.
    let list = client::qontak_authorization(
        &p.api_key,
        &p.api_secret,
        &date,
        "GET",
        "/api/v1/messages",
        b"",
    );
    let (code, _) = read(
        t.http
            .get(t.url("/api/v1/messages"))
            .header("Authorization", list.authorization)
            .header("Date", &date)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(t.message_ids(p).await.len(), 1);
}

async fn idempotency(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let body = json!({"recipient": "6281234567890", "type": "text", "message": "once"});
    let send = |key: &'static str, body: serde_json::Value| {
        t.signed(
            reqwest::Method::POST,
            "/api/v1/send",
            p,
            body.to_string().into_bytes(),
        )
        .header("Content-Type", "application/json")
        .header("X-REQUEST-ID", key)
    };
    let (c1, r1) = read(send("order-1", body.clone()).send().await.unwrap()).await;
    let (c2, r2) = read(send("order-1", body.clone()).send().await.unwrap()).await;
    assert_eq!((c1, c2), (201, 201));
    assert_eq!(r1["data"]["id"], r2["data"]["id"]);
    // The same key with another meaning is refused, not silently merged.
    let other = json!({"recipient": "6281234567890", "type": "text", "message": "different"});
    assert_error(
        &read(send("order-1", other).send().await.unwrap()).await,
        409,
        "IDEMPOTENCY_CONFLICT",
    );

    // Concurrent retries of one request create one message.
    let futs = (0..16).map(|_| send("order-2", body.clone()).send());
    let results = futures::future::join_all(futs).await;
    let mut ids = std::collections::HashSet::new();
    for r in results {
        let (code, b) = read(r.unwrap()).await;
        assert_eq!(code, 201, "{b}");
        ids.insert(b["data"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one message for one key");
    assert_eq!(t.message_ids(p).await.len(), 2);
}

async fn rate_limit_cannot_be_overshot(db: TestDb) {
    let t = TestApp::init(db).start().await;
    let p = t.create_project_with(5, 1000).await;
    crate::support::clear_of_minute_boundary().await;
    let futs = (0..12).map(|i| {
        t.send_json(
            &p,
            json!({"recipient": "6281234567890", "message": format!("m{i}")}),
        )
    });
    let results = futures::future::join_all(futs).await;
    let ok = results.iter().filter(|(c, _)| *c == 201).count();
    let limited: Vec<_> = results.iter().filter(|(c, _)| *c == 429).collect();
    assert_eq!(ok, 5, "exactly the limit is accepted: {results:?}");
    assert_eq!(limited.len(), 7);
    for r in &limited {
        assert_error(r, 429, "RATE_LIMITED");
    }
    // Retry-After is set and within the minute.
    let body = json!({"recipient": "6281234567890", "message": "again"})
        .to_string()
        .into_bytes();
    let resp = t
        .signed(reqwest::Method::POST, "/api/v1/send", &p, body)
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let ra: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&ra), "retry-after {ra}");
    assert_eq!(t.message_ids(&p).await.len(), 5);
}

async fn monthly_quota(db: TestDb) {
    let t = TestApp::init(db).start().await;
    let p = t.create_project_with(1000, 3).await;
    for i in 0..3 {
        let (code, b) = t
            .send_json(
                &p,
                json!({"recipient": "6281234567890", "message": format!("m{i}")}),
            )
            .await;
        assert_eq!(code, 201, "{b}");
    }
    let r = t
        .send_json(&p, json!({"recipient": "6281234567890", "message": "over"}))
        .await;
    assert_error(&r, 403, "QUOTA_EXCEEDED");
    assert_eq!(
        r.1["message"],
        "Monthly quota exceeded or account suspended."
    );
}

async fn tenant_isolation(db: TestDb) {
    let t = TestApp::init(db).start().await;
    let a = t.create_project().await;
    let b = t.create_project().await;
    let (_, sent) = t
        .send_json(
            &a,
            json!({"recipient": "6281234567890", "message": "secret"}),
        )
        .await;
    let id = sent["data"]["id"].as_str().unwrap();
    let theirs = t.status(&b, id).await;
    let missing = t.status(&b, &uuid::Uuid::new_v4().to_string()).await;
    assert_error(&theirs, 404, "MESSAGE_NOT_FOUND");
    assert_eq!(
        theirs, missing,
        "another project's message looks exactly like a missing one"
    );
    // B cannot send through A's device.
    let b_with_a_device = crate::support::TestProject {
        device_code: a.device_code.clone(),
        ..b.clone()
    };
    let r = t
        .send_json(
            &b_with_a_device,
            json!({"recipient": "6281234567890", "message": "x"}),
        )
        .await;
    assert_error(&r, 404, "DEVICE_NOT_FOUND");
    assert!(t.message_ids(&b).await.is_empty());
    assert_eq!(t.message_ids(&a).await.len(), 1);
}

async fn malformed_input_is_rejected_and_creates_nothing(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let raw = |body: &str, ct: &str| {
        let req = t
            .signed(
                reqwest::Method::POST,
                "/api/v1/send",
                p,
                body.as_bytes().to_vec(),
            )
            .header("Content-Type", ct.to_owned());
        async move { read(req.send().await.unwrap()).await }
    };
    assert_error(
        &raw("{not json", "application/json").await,
        400,
        "INVALID_JSON",
    );
    assert_error(
        &raw("recipient=1", "text/plain").await,
        415,
        "UNSUPPORTED_CONTENT_TYPE",
    );
    let cases = [
        (
            json!({"recipient": "12ab", "message": "x"}),
            400,
            "INVALID_RECIPIENT",
        ),
        (
            json!({"recipient": "123", "message": "x"}),
            400,
            "INVALID_RECIPIENT",
        ),
        (json!({"message": "x"}), 400, "INVALID_RECIPIENT"),
        (
            json!({"recipient": "6281234567890", "type": "sticker", "message": "x"}),
            400,
            "INVALID_MESSAGE_TYPE",
        ),
        (
            json!({"recipient": "6281234567890", "type": "text"}),
            400,
            "MESSAGE_REQUIRED",
        ),
        (
            json!({"recipient": "6281234567890", "message": "x".repeat(65_537)}),
            400,
            "MESSAGE_TOO_LONG",
        ),
        (
            json!({"recipient": "6281234567890", "type": "image", "message": "x"}),
            400,
            "MEDIA_REQUIRED",
        ),
        (
            json!({"recipient": "6281234567890", "message": "x", "payload": [1, 2]}),
            400,
            "INVALID_PAYLOAD",
        ),
        (
            json!({"recipient": "6281234567890", "message": "x", "payload": {"big": "y".repeat(17_000)}}),
            400,
            "INVALID_PAYLOAD",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(&t.send_json(p, body).await, status, code);
    }
    let no_device = crate::support::TestProject {
        device_code: String::new(),
        ..p.clone()
    };
    assert_error(
        &t.send_json(
            &no_device,
            json!({"recipient": "6281234567890", "message": "x"}),
        )
        .await,
        400,
        "MISSING_DEVICE_CODE",
    );
    let bad_device = crate::support::TestProject {
        device_code: "RK-NOPE".into(),
        ..p.clone()
    };
    assert_error(
        &t.send_json(
            &bad_device,
            json!({"recipient": "6281234567890", "message": "x"}),
        )
        .await,
        404,
        "DEVICE_NOT_FOUND",
    );
    assert_error(&t.status(p, "not-a-uuid").await, 404, "MESSAGE_NOT_FOUND");
    // Unknown routes and methods answer with the envelope too.
    assert_error(
        &read(t.http.get(t.url("/api/v1/nope")).send().await.unwrap()).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &read(t.http.delete(t.url("/api/v1/send")).send().await.unwrap()).await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    assert!(
        t.message_ids(p).await.is_empty(),
        "nothing rejected was stored"
    );
    // A JSON number as recipient is accepted (clients send both).
    let (code, _) = t
        .send_json(p, json!({"recipient": 6281234567890u64, "message": "x"}))
        .await;
    assert_eq!(code, 201);
}

async fn accepted_messages_survive_restart(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project().clone();
    let futs = (0..50).map(|i| {
        t.send_json(
            &p,
            json!({"recipient": "6281234567890", "message": format!("m{i}")}),
        )
    });
    let ids: Vec<String> = futures::future::join_all(futs)
        .await
        .into_iter()
        .map(|(c, b)| {
            assert_eq!(c, 201);
            b["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let t = t.stop().await.node("node-2").start().await;
    for id in &ids {
        let (code, st) = t.status(&p, id).await;
        assert_eq!(code, 200);
        assert_eq!(st["data"]["status"], "queued");
        assert_eq!(st["meta"]["server_id"], "node-2");
    }
    assert_eq!(t.message_ids(&p).await.len(), 50);
}

/// Two gateway nodes on one database: concurrent requests spread over both cannot
/// overshoot the project's limits, and idempotency holds across nodes.
/// Several nodes share PostgreSQL (SQLite is one node: see `cluster::sqlite_is_one_node`).
mod limits_hold_across_nodes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(db) = crate::support::TestDb::postgres() {
            super::limits_hold_across_nodes(db).await
        }
    }
}

async fn limits_hold_across_nodes(db: TestDb) {
    let a = TestApp::init(db).node("node-a").start().await;
    let b = a.another_node("node-b").start().await;
    let p = a.create_project_with(10, 1000).await;
    crate::support::clear_of_minute_boundary().await;
    let futs = (0..30).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        node.send_json(
            &p,
            json!({"recipient": "6281234567890", "message": format!("m{i}")}),
        )
    });
    let results = futures::future::join_all(futs).await;
    let accepted: Vec<_> = results.iter().filter(|(c, _)| *c == 201).collect();
    assert_eq!(accepted.len(), 10, "{results:?}");
    assert!(results.iter().all(|(c, _)| *c == 201 || *c == 429));

    let q = b.create_project_with(1000, 1000).await;
    let key_req = |t: &TestApp| {
        t.signed(
            reqwest::Method::POST,
            "/api/v1/send",
            &q,
            br#"{"recipient":"6281234567890","message":"k"}"#.to_vec(),
        )
        .header("Content-Type", "application/json")
        .header("X-REQUEST-ID", "cross-node")
        .send()
    };
    let (r1, r2) = tokio::join!(key_req(&a), key_req(&b));
    let (_, j1) = read(r1.unwrap()).await;
    let (_, j2) = read(r2.unwrap()).await;
    assert_eq!(j1["data"]["id"], j2["data"]["id"]);
    assert_eq!(a.message_ids(&q).await.len(), 1);
    b.server.shutdown().await;
}
