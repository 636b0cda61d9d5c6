//! Webhooks and the event stream end to end: a real HTTP receiver on loopback verifies both
//! signature schemes (with its own HMAC code, not wagate's); events come from real changes
//! (an inbound message at wasim, sends, session states) and from the test endpoint.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use wagate::crypto::MasterKey;
use wagate::proto::v1::webhooks_service_client::WebhooksServiceClient;
use wagate::proto::v1::*;

use crate::on_both_backends;
use crate::sak_api::{Sak, link};
use crate::support::{
    Hit, TestApp, TestDb, TestProject, WebFrames, assert_error, eventually, grpc_signed,
    grpc_web_call,
};

on_both_backends!(
    sak_webhooks_inbound_statuses_and_signatures,
    receiver_down_then_up_gets_every_event_in_order,
    restart_during_deliveries_loses_nothing,
    gone_disables_then_replay_delivers,
    event_stream_resumes_from_a_cursor,
    stored_loopback_receiver_is_refused_once_private_is_off,
    session_webhook_gets_the_sessions_first_event,
);

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn header<'a>(h: &'a Hit, name: &str) -> &'a str {
    h.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Checks a request the way a receiver would, with either scheme, and returns its body.
fn verify(h: &Hit, secret: &str) -> Value {
    // SAK: sha256=<hex HMAC-SHA256(secret, raw body)>.
    let want = format!(
        "sha256={}",
        hex::encode(hmac(secret.as_bytes(), &[&h.body]))
    );
    assert_eq!(header(h, "x-webhook-signature"), want, "SAK signature");
    // Standard Webhooks: v1,<base64 HMAC-SHA256(base64-decoded key, id.ts.body)>.
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .unwrap();
    let (id, ts) = (header(h, "webhook-id"), header(h, "webhook-timestamp"));
    let sig = b64.encode(hmac(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", &h.body],
    ));
    assert!(
        header(h, "webhook-signature")
            .split(' ')
            .any(|s| s == format!("v1,{sig}")),
        "Standard Webhooks signature"
    );
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((-5..300).contains(&age), "fresh timestamp");
    let body = h.json();
    assert_eq!(body["eventId"], id, "webhook-id is the event id");
    assert_eq!(body["event"], header(h, "x-webhook-event"));
    assert!(
        !String::from_utf8_lossy(&h.body).contains(secret),
        "no secret in a payload"
    );
    body
}

// --- gRPC helpers ---

type Hooks = WebhooksServiceClient<tonic::transport::Channel>;
const SVC: &str = "/wagate.v1.WebhooksService/";

async fn hooks(t: &TestApp) -> Hooks {
    WebhooksServiceClient::connect(t.base.clone())
        .await
        .expect("gRPC connect")
}

/// The project's gRPC credentials (no device code: project-wide) and its one session.
fn project_and_session(t: &TestApp) -> (TestProject, String) {
    let p = t.project();
    (p.project_wide(), p.device_id.clone())
}

async fn create_hook(
    c: &mut Hooks,
    p: &TestProject,
    url: String,
    events: &[&str],
) -> (String, String) {
    let r = c
        .create_webhook(grpc_signed(
            p,
            &format!("{SVC}CreateWebhook"),
            CreateWebhookRequest {
                session_id: String::new(),
                url,
                events: events.iter().map(|e| e.to_string()).collect(),
            },
        ))
        .await
        .expect("create webhook")
        .into_inner();
    (r.webhook.unwrap().webhook_id, r.secret)
}

/// A test event for the session; its `message` carries `label`.
async fn fire(c: &mut Hooks, p: &TestProject, session: &str, label: &str) -> Vec<String> {
    c.test_webhook(grpc_signed(
        p,
        &format!("{SVC}TestWebhook"),
        TestWebhookRequest {
            event: "message.received".into(),
            message: label.into(),
            session_id: session.into(),
        },
    ))
    .await
    .expect("test webhook")
    .into_inner()
    .delivery_ids
}

async fn deliveries(c: &mut Hooks, p: &TestProject, hook: &str) -> Vec<Delivery> {
    c.list_deliveries(grpc_signed(
        p,
        &format!("{SVC}ListDeliveries"),
        ListDeliveriesRequest {
            webhook_id: hook.into(),
            page_size: 500,
            page_token: String::new(),
        },
    ))
    .await
    .expect("list deliveries")
    .into_inner()
    .deliveries
}

fn labels(hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| h.json()["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// --- scenarios ---

/// The gateway most scenarios use: a project and a receiver, node `n1`.
async fn with_receiver(db: TestDb) -> TestApp {
    TestApp::init(db)
        .with_project()
        .with_receiver()
        .node("n1")
        .start()
        .await
}

/// The SAK flow: webhook inside session creation, `POST /webhooks` with the JWT, the test
/// endpoint with the session key; an inbound message at wasim arrives as the documented
/// `message.received`; a send produces `message.status`; QR rotations `session.status`.
async fn sak_webhooks_inbound_statuses_and_signatures(db: TestDb) {
    let t = TestApp::init(db)
        .with_wasim()
        .with_receiver()
        .node("n1")
        .start()
        .await;
    let (rx, wa) = (t.receiver(), t.wa());
    let s = Sak { t: &t };
    let bearer = s.register("hooks@example.com").await;
    let jwt = ("authorization", bearer.as_str());

    // A bad webhook refuses the session creation and creates nothing.
    let bad = s
        .post(
            "/api/v1/sessions",
            jwt,
            json!({"name": "x", "webhook": {"url": "ftp://example.com/hook"}}),
        )
        .await;
    assert_error(&bad, 400, "INVALID_WEBHOOK_URL");
    let (_, list) = s.get("/api/v1/sessions", jwt).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");

    // POST /webhooks (JWT) without a session: project-wide, every event.
    let (code, all) = s
        .post(
            "/api/v1/webhooks",
            jwt,
            json!({"url": rx.url("/all"), "events": ["*"]}),
        )
        .await;
    assert_eq!(code, 201, "{all}");
    let all_secret = all["data"]["secret"].as_str().unwrap().to_owned();
    assert!(all["data"]["webhookId"].as_str().is_some());

    // Session creation with a webhook, exactly as the SAK document shows.
    let (code, created) = s
        .post(
            "/api/v1/sessions",
            jwt,
            json!({"name": "Customer 123", "webhook": {"url": rx.url("/sak"), "events": ["message.received"]}}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let d = &created["data"];
    let session = d["sessionId"].as_str().unwrap().to_owned();
    let session_key = d["apiKey"].as_str().unwrap().to_owned();
    assert_eq!(d["webhook"]["url"], rx.url("/sak"));
    assert_eq!(d["webhook"]["events"], json!(["message.received"]));
    let sak_secret = d["webhook"]["secret"].as_str().unwrap().to_owned();
    assert!(d["webhook"]["id"].as_str().is_some());

    // POST /webhooks (JWT) for the session, as the document's second form.
    let (code, third) = s
        .post(
            "/api/v1/webhooks",
            jwt,
            json!({"sessionId": session, "url": rx.url("/session"), "events": ["session.status"]}),
        )
        .await;
    assert_eq!(code, 201, "{third}");
    assert_eq!(third["data"]["sessionId"], session.as_str());
    let (_, listed) = s.get("/api/v1/webhooks", jwt).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    assert!(
        !listed.to_string().contains(&sak_secret),
        "secrets are never listed"
    );

    // The test endpoint, with the session key: the session's webhooks get it.
    let (code, tested) = s
        .post(
            "/api/v1/webhooks/test",
            ("x-api-key", session_key.as_str()),
            json!({"event": "message.received", "message": "SAK webhook live test"}),
        )
        .await;
    assert_eq!(code, 200, "{tested}");
    let h = eventually(10, "the test event at /sak", || async {
        rx.delivered("/sak").into_iter().next()
    })
    .await;
    let body = verify(&h, &sak_secret);
    assert_eq!(body["event"], "message.received");
    assert_eq!(body["sessionId"], session.as_str());
    assert_eq!(body["test"], true);
    assert_eq!(body["message"], "SAK webhook live test");

    // QR rotations reach the `*` webhook as session.status, with the code to show.
    let qr_event = eventually(15, "a session.status qr event", || async {
        rx.delivered("/all")
            .into_iter()
            .map(|h| verify(&h, &all_secret))
            .find(|b| b["event"] == "session.status" && b["status"] == "qr")
    })
    .await;
    assert!(qr_event["qrCode"].as_str().is_some_and(|q| !q.is_empty()));

    // Link the session; a WhatsApp user (a real whatsapp-rust client at wasim) writes to it.
    link(&s, jwt, &session, "919800000001").await;
    let connected = eventually(10, "session.status connected", || async {
        rx.delivered("/all")
            .into_iter()
            .map(|h| h.json())
            .find(|b| b["event"] == "session.status" && b["status"] == "connected")
    })
    .await;
    assert_eq!(connected["phoneNumber"], "919800000001");
    let mut user = wasim::client::TestClient::start(
        t.sim().addr(),
        Arc::new(wasim::wacore::store::in_memory::InMemoryBackend::new()),
        wasim::client::ClientOptions {
            push_name: Some("Customer Name".into()),
        },
    )
    .await
    .unwrap();
    let qr = user.next_qr(Duration::from_secs(15)).await.unwrap();
    wa.scan(&qr, "918484862949").await.unwrap();
    user.connected(Duration::from_secs(15)).await.unwrap();
    let to: wasim::whatsapp_rust::Jid = "919800000001@s.whatsapp.net".parse().unwrap();
    let wa_id = user
        .client()
        .send_message(
            to,
            wasim::waproto::whatsapp::Message {
                conversation: Some("hi".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = eventually(15, "message.received at /sak", || async {
        rx.delivered("/sak")
            .into_iter()
            .map(|h| verify(&h, &sak_secret))
            .find(|b| b["test"].is_null())
    })
    .await;
    // The SAK document's payload, field by field.
    assert_eq!(got["event"], "message.received");
    assert_eq!(got["sessionId"], session.as_str());
    assert_eq!(got["from"], "918484862949@s.whatsapp.net");
    assert_eq!(got["from_jid"], "918484862949@s.whatsapp.net");
    assert_eq!(got["from_number"], "+918484862949");
    assert_eq!(got["wa_id"], "918484862949");
    assert_eq!(got["messageId"], wa_id.message_id.as_str());
    assert!(got["timestamp"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(got["type"], "conversation");
    assert_eq!(got["text"], "hi");
    assert_eq!(got["pushName"], "Customer Name");
    // Only what /sak subscribed to reached it.
    assert!(
        rx.delivered("/sak")
            .iter()
            .all(|h| h.json()["event"] == "message.received")
    );

    // A reply through SAK: message.status sent, then delivered, with the caller's ids.
    let (code, sent) = s
        .post(
            "/api/v1/messages/send",
            ("x-api-key", session_key.as_str()),
            json!({"to": "+918484862949", "text": "hello back"}),
        )
        .await;
    assert_eq!(code, 201, "{sent}");
    let message_id = sent["data"]["messageId"].as_str().unwrap().to_owned();
    let statuses = eventually(20, "sent and delivered statuses", || async {
        let st: Vec<Value> = rx
            .delivered("/all")
            .into_iter()
            .map(|h| verify(&h, &all_secret))
            .filter(|b| b["event"] == "message.status" && b["messageId"] == message_id.as_str())
            .collect();
        st.iter().any(|b| b["status"] == "delivered").then_some(st)
    })
    .await;
    let order: Vec<&str> = statuses
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(order.first(), Some(&"sent"), "{order:?}");
    assert_eq!(statuses[0]["recipient"], "918484862949");
    // Each event once: ids are unique across everything received.
    let ids: Vec<String> = rx
        .delivered("/all")
        .iter()
        .map(|h| header(h, "webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len());
}

/// The receiver fails for a while, then recovers: every event arrives, and within a lane
/// no event is attempted before the one ahead of it succeeded (the ordering guarantee).
async fn receiver_down_then_up_gets_every_event_in_order(db: TestDb) {
    let t = with_receiver(db).await;
    let rx = t.receiver();
    rx.answer.store(503, Ordering::SeqCst);
    let (p, session) = project_and_session(&t);
    let mut c = hooks(&t).await;
    let (hook, secret) = create_hook(&mut c, &p, rx.url("/h"), &["*"]).await;
    let n = 20;
    for i in 0..n {
        assert_eq!(
            fire(&mut c, &p, &session, &format!("{i:02}")).await.len(),
            1
        );
    }
    eventually(10, "a few failed attempts", || async {
        (rx.hits().len() >= 3).then_some(())
    })
    .await;
    let log = deliveries(&mut c, &p, &hook).await;
    assert_eq!(log.len(), n);
    let head = log
        .iter()
        .find(|d| !d.attempts.is_empty())
        .expect("an attempted delivery");
    assert_eq!(head.state, "failed");
    assert_eq!(head.attempts[0].status_code, 503);
    assert!(head.attempts[0].error.contains("503"));

    rx.answer.store(200, Ordering::SeqCst);
    let ok = eventually(30, "all events after recovery", || async {
        let ok = rx.delivered("/h");
        (ok.len() >= n).then_some(ok)
    })
    .await;
    let want: Vec<String> = (0..n).map(|i| format!("{i:02}")).collect();
    assert_eq!(labels(&ok), want, "delivered in order, each once");
    for h in &ok {
        verify(h, &secret);
    }
    // Every attempt, failed or not, went in order: a later event never overtook.
    let attempted = labels(&rx.hits());
    assert!(
        attempted.windows(2).all(|w| w[0] <= w[1]),
        "attempts out of order: {attempted:?}"
    );
    // The dispatcher records outcomes in batches after the receiver answered.
    eventually(10, "every delivery recorded as succeeded", || {
        let (mut c, p, hook) = (c.clone(), &p, &hook);
        async move {
            let log = deliveries(&mut c, p, hook).await;
            log.iter().all(|d| d.state == "succeeded").then_some(())
        }
    })
    .await;
}

/// `wagate serve` as its own process, killed with SIGKILL and started again.
struct Gateway {
    child: std::process::Child,
    base: String,
}

impl Gateway {
    async fn spawn(db: &TestDb, key_hex: &str, port: u16) -> Gateway {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
            .args(["serve", "--database-url", &db.url, "--node-id", "node-k"])
            // A restart under the same id waits out the killed process's heartbeat.
            .args(["--lease-ttl-secs", "3", "--lease-renew-secs", "1"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("WAGATE_MASTER_KEY", key_hex)
            .env("WAGATE_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("WAGATE_WEBHOOK_RETRY_BASE_MS", "100")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start wagate");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually(30, "the gateway to answer /health", || async {
            http.get(format!("{base}/health"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        Gateway { child, base }
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway is killed while deliveries are in flight; after a restart every event
/// arrives (at least once; receivers de-duplicate on webhook-id).
async fn restart_during_deliveries_loses_nothing(db: TestDb) {
    let key_hex = hex::encode(wagate::crypto::random_bytes::<32>());
    let key = MasterKey::parse(&key_hex).unwrap();
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Schema and project first (the server migrates too; this only needs the tables).
    let t = TestApp::init(db)
        .with_key(key)
        .with_project()
        .with_receiver()
        .node("setup")
        .start()
        .await;
    let (p, session) = project_and_session(&t);
    let stopped = t.stop().await;
    let (db, rx) = (stopped.db(), stopped.receiver());
    // Slow enough that the events are all recorded long before they are all delivered.
    rx.delay_ms.store(200, Ordering::SeqCst);
    let mut gw = Gateway::spawn(db, &key_hex, free_port()).await;
    let mut c = WebhooksServiceClient::connect(gw.base.clone())
        .await
        .unwrap();
    create_hook(&mut c, &p, rx.url("/r"), &["message.received"]).await;
    let n = 150;
    for i in 0..n {
        fire(&mut c, &p, &session, &format!("{i:03}")).await;
    }
    eventually(15, "some deliveries", || async {
        (rx.delivered("/r").len() >= 10).then_some(())
    })
    .await;
    gw.kill();
    let before: HashSet<String> = labels(&rx.delivered("/r")).into_iter().collect();
    assert!(before.len() < n, "killed mid-way ({} of {n})", before.len());

    rx.delay_ms.store(0, Ordering::SeqCst);
    let _gw = Gateway::spawn(db, &key_hex, free_port()).await;
    let got = eventually(60, "every event after the restart", || async {
        let labels: HashSet<String> = labels(&rx.delivered("/r")).into_iter().collect();
        (labels.len() == n).then_some(labels)
    })
    .await;
    assert_eq!(got.len(), n);
}

/// 410 Gone disables the webhook and kills what was pending; replay sends it again.
async fn gone_disables_then_replay_delivers(db: TestDb) {
    let t = with_receiver(db).await;
    let rx = t.receiver();
    rx.answer.store(410, Ordering::SeqCst);
    // A slow first answer, so both events are usually queued before the 410 arrives.
    rx.delay_ms.store(300, Ordering::SeqCst);
    let (p, session) = project_and_session(&t);
    let mut c = hooks(&t).await;
    let (hook, secret) = create_hook(&mut c, &p, rx.url("/g"), &["*"]).await;
    fire(&mut c, &p, &session, "a").await;
    fire(&mut c, &p, &session, "b").await;
    let w = eventually(10, "the webhook disabled", || {
        let mut c = c.clone();
        let (p, hook) = (p.clone(), hook.clone());
        async move {
            let w = c
                .get_webhook(grpc_signed(
                    &p,
                    &format!("{SVC}GetWebhook"),
                    GetWebhookRequest { webhook_id: hook },
                ))
                .await
                .unwrap()
                .into_inner()
                .webhook
                .unwrap();
            (!w.enabled).then_some(w)
        }
    })
    .await;
    assert!(w.disabled_reason.contains("410"), "{}", w.disabled_reason);
    let log = deliveries(&mut c, &p, &hook).await;
    assert!(log.iter().all(|d| d.state == "dead"), "{log:?}");
    assert_eq!(rx.hits().len(), 1, "nothing after the 410");
    let queued = log.len();
    // While disabled, new events are not queued for it.
    fire(&mut c, &p, &session, "c").await;
    assert_eq!(deliveries(&mut c, &p, &hook).await.len(), queued);
    rx.delay_ms.store(0, Ordering::SeqCst);

    // Enabled again and replayed: both dead deliveries arrive, in order.
    rx.answer.store(200, Ordering::SeqCst);
    c.update_webhook(grpc_signed(
        &p,
        &format!("{SVC}UpdateWebhook"),
        UpdateWebhookRequest {
            webhook_id: hook.clone(),
            url: String::new(),
            events: vec![],
            enabled: Some(true),
            update_mask: None,
        },
    ))
    .await
    .unwrap();
    let n = c
        .redeliver_failed(grpc_signed(
            &p,
            &format!("{SVC}RedeliverFailed"),
            RedeliverFailedRequest {
                webhook_id: hook.clone(),
                since: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(n as usize, queued);
    let ok = eventually(10, "the replayed events", || async {
        let ok = rx.delivered("/g");
        (ok.len() == queued).then_some(ok)
    })
    .await;
    assert_eq!(labels(&ok), ["a", "b"][..queued]);
    for h in &ok {
        verify(h, &secret);
    }
    // One delivery again, on demand; same event id, so receivers can de-duplicate.
    let first = deliveries(&mut c, &p, &hook).await.pop().unwrap();
    c.redeliver_delivery(grpc_signed(
        &p,
        &format!("{SVC}RedeliverDelivery"),
        RedeliverDeliveryRequest {
            webhook_id: hook.clone(),
            delivery_id: first.delivery_id.clone(),
        },
    ))
    .await
    .unwrap();
    let again = eventually(10, "the redelivered event", || async {
        let ok = rx.delivered("/g");
        (ok.len() == queued + 1).then_some(ok)
    })
    .await;
    assert_eq!(header(&again[queued], "webhook-id"), first.event_id);
    let status = c
        .redeliver_delivery(grpc_signed(
            &p,
            &format!("{SVC}RedeliverDelivery"),
            RedeliverDeliveryRequest {
                webhook_id: hook.clone(),
                delivery_id: "no-such-delivery".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Rotation: the new secret signs at once, the old one keeps verifying during the overlap.
    let rotated = c
        .rotate_webhook_secret(grpc_signed(
            &p,
            &format!("{SVC}RotateWebhookSecret"),
            RotateWebhookSecretRequest {
                webhook_id: hook.clone(),
                overlap_seconds: Some(3600),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    fire(&mut c, &p, &session, "d").await;
    let last = eventually(10, "an event after rotation", || async {
        rx.delivered("/g").into_iter().nth(queued + 1)
    })
    .await;
    verify(&last, &secret);
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(rotated.secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let sig = b64.encode(hmac(
        &key,
        &[
            header(&last, "webhook-id").as_bytes(),
            b".",
            header(&last, "webhook-timestamp").as_bytes(),
            b".",
            &last.body,
        ],
    ));
    assert!(header(&last, "webhook-signature").contains(&format!("v1,{sig}")));
}

/// A stream resumed from the last event id it saw gets everything after it, once, in order,
/// then live events.
async fn event_stream_resumes_from_a_cursor(db: TestDb) {
    let t = with_receiver(db).await;
    let (p, session) = project_and_session(&t);
    let mut c = hooks(&t).await;
    let open = |c: &mut Hooks, after: String| {
        let req = grpc_signed(
            &p,
            &format!("{SVC}StreamEvents"),
            StreamEventsRequest {
                session_id: session.clone(),
                after_event_id: after,
            },
        );
        let mut c = c.clone();
        async move { c.stream_events(req).await.expect("stream").into_inner() }
    };
    let label = |e: &StreamEventsResponse| -> String {
        let data = e.data.clone().unwrap();
        match data.fields.get("message").and_then(|v| v.kind.clone()) {
            Some(prost_types::value::Kind::StringValue(s)) => s,
            _ => String::new(),
        }
    };

    let mut live = open(&mut c, String::new()).await;
    for i in 0..3 {
        fire(&mut c, &p, &session, &format!("e{i}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut live).await);
    }
    assert_eq!(
        seen.iter().map(label).collect::<Vec<_>>(),
        ["e0", "e1", "e2"]
    );
    assert!(
        seen.iter()
            .all(|e| e.session_id == session && e.r#type == "message.received")
    );
    let cursor = seen[2].event_id.clone();
    drop(live);

    for i in 3..7 {
        fire(&mut c, &p, &session, &format!("e{i}")).await;
    }
    let mut resumed = open(&mut c, cursor).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(label(&next_event(&mut resumed).await));
    }
    assert_eq!(
        got,
        ["e3", "e4", "e5", "e6"],
        "everything after the cursor, once"
    );
    fire(&mut c, &p, &session, "e7").await;
    assert_eq!(
        label(&next_event(&mut resumed).await),
        "e7",
        "then live events"
    );

    // The same resume from a browser, over grpc-web (HTTP/1.1, frames in the body).
    let web = grpc_web_events(&t, &p, &session, &seen[2].event_id, 5).await;
    assert_eq!(
        web.iter().map(label).collect::<Vec<_>>(),
        ["e3", "e4", "e5", "e6", "e7"]
    );

    // A cursor that names no event of this project is refused.
    let bad = c
        .stream_events(grpc_signed(
            &p,
            &format!("{SVC}StreamEvents"),
            StreamEventsRequest {
                session_id: String::new(),
                after_event_id: "00000000-0000-0000-0000-000000000000".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::NotFound);
}

/// Reads `n` events of a StreamEvents call made the way a browser makes it (grpc-web).
async fn grpc_web_events(
    t: &TestApp,
    p: &TestProject,
    session: &str,
    after: &str,
    n: usize,
) -> Vec<StreamEventsResponse> {
    use prost::Message;
    let msg = StreamEventsRequest {
        session_id: session.into(),
        after_event_id: after.into(),
    }
    .encode_to_vec();
    let path = format!("{SVC}StreamEvents");
    let mut frames = WebFrames::new(grpc_web_call(t, p, &path, &msg).await);
    let mut out = Vec::new();
    while out.len() < n {
        out.push(frames.message::<StreamEventsResponse>().await);
    }
    out
}

async fn next_event(s: &mut tonic::Streaming<StreamEventsResponse>) -> StreamEventsResponse {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("event")
}

/// A webhook created with its session is stored with it, before the session starts: the
/// first event each session records (its first `session.status`) is delivered to its
/// webhook. Several sessions are created at once, as a busy gateway would.
async fn session_webhook_gets_the_sessions_first_event(db: TestDb) {
    const SESSIONS: usize = 6;
    let t = TestApp::init(db)
        .with_wasim()
        .with_receiver()
        .node("n1")
        .start()
        .await;
    let rx = t.receiver();
    let s = Sak { t: &t };
    let bearer = s.register("first@example.com").await;
    let jwt = ("authorization", bearer.as_str());
    let creates = (0..SESSIONS).map(|i| {
        let (s, url) = (&s, rx.url(&format!("/first/{i}")));
        async move {
            s.post(
                "/api/v1/sessions",
                jwt,
                json!({"name": format!("first {i}"), "webhook": {"url": url}}),
            )
            .await
        }
    });
    let created = futures::future::join_all(creates).await;
    let db = wagate::storage::Db::open(&t.db.url, 2).unwrap();
    for (i, (code, created)) in created.iter().enumerate() {
        assert_eq!(*code, 201, "{created}");
        let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
        let secret = created["data"]["webhook"]["secret"].as_str().unwrap();
        let path = format!("/first/{i}");
        let first = eventually(20, "the session's first delivery", || async {
            rx.delivered(&path).into_iter().next()
        })
        .await;
        let body = verify(&first, secret);
        // The session's first event, as the event log orders it.
        let session = id.clone();
        let first_event: String = db
            .run(move |c| {
                use diesel::prelude::*;
                use wagate::storage::schema::events;
                Ok(wagate::db_run!(c, |c| events::table
                    .filter(events::device_id.eq(&session))
                    .order((events::txid.asc(), events::seq.asc()))
                    .select(events::id)
                    .first::<String>(c))?)
            })
            .await
            .unwrap();
        assert_eq!(body["eventId"], first_event.as_str(), "{body}");
        assert_eq!(body["event"], "session.status", "{body}");
        assert_eq!(body["sessionId"], id.as_str(), "{body}");
    }
    t.shutdown().await;
}

/// A receiver registered on loopback while private receivers were allowed is not reached once
/// the gateway restarts without the setting: every attempt is refused before connecting, the
/// delivery log says why (without the URL's token), and the delivery stays up for retry.
async fn stored_loopback_receiver_is_refused_once_private_is_off(db: TestDb) {
    let t = with_receiver(db).await;
    let rx = t.receiver();
    let (p, session) = project_and_session(&t);
    let mut c = hooks(&t).await;
    let (hook, _) = create_hook(&mut c, &p, rx.url("/h?token=s3cret"), &["*"]).await;
    drop(c);
    let t = t
        .stop()
        .await
        .configure(|s| s.webhooks.allow_private = false)
        .start()
        .await;
    let rx = t.receiver();
    let c = hooks(&t).await;
    assert_eq!(fire(&mut c.clone(), &p, &session, "x").await.len(), 1);
    let refused = eventually(
        10,
        "two attempts (or a success) in the delivery log",
        || {
            let (mut c, p, hook) = (c.clone(), &p, &hook);
            async move {
                let log = deliveries(&mut c, p, hook).await;
                let d = log.into_iter().next()?;
                (d.attempts.len() >= 2 || d.state == "succeeded").then_some(d)
            }
        },
    )
    .await;
    assert_eq!(refused.state, "failed", "kept for retry: {refused:?}");
    for a in &refused.attempts {
        assert_eq!(a.status_code, 0, "{a:?}");
        assert!(
            a.error.contains("127.0.0.1 is not a public address")
                && a.error.contains("WAGATE_WEBHOOK_ALLOW_PRIVATE"),
            "{a:?}"
        );
        assert!(!a.error.contains("s3cret"), "no token in the log: {a:?}");
    }
    assert!(rx.hits().is_empty(), "the receiver got {:?}", rx.hits());
    assert_eq!(rx.connections.load(Ordering::SeqCst), 0, "no connection");
}

/// Without WAGATE_WEBHOOK_ALLOW_PRIVATE, loopback and private receivers are refused.
#[tokio::test]
async fn private_receivers_are_refused_by_default() {
    let t = TestApp::init(TestDb::sqlite()).with_project().start().await;
    let (p, _) = project_and_session(&t);
    let mut c = hooks(&t).await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/",
        "http://localhost/",
        "http://[::1]/",
    ] {
        let e = c
            .create_webhook(grpc_signed(
                &p,
                &format!("{SVC}CreateWebhook"),
                CreateWebhookRequest {
                    session_id: String::new(),
                    url: url.into(),
                    events: vec![],
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{url}");
        assert_eq!(
            e.metadata().get("x-error-code").unwrap(),
            "INVALID_WEBHOOK_URL"
        );
    }
}
