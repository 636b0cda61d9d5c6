//! Broadcasts with a media header and the number check, end to end against wasim: the header
//! media is fetched once per campaign (from a loopback HTTP server, allowed by the webhook
//! setting) or taken from a file uploaded with Qontak's `file_uploader`, and every recipient
//! gets one media message whose caption is the rendered text; a bad URL fails the
//! recipients with its code; the number check answers through the Qontak surface and
//! `skip_unregistered` campaigns skip numbers not on WhatsApp.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use wagate::proto::v1::broadcasts_service_client::BroadcastsServiceClient;
use wagate::proto::v1::messaging_service_client::MessagingServiceClient;
use wagate::proto::v1::{
    BroadcastRecipient, CheckNumbersRequest, DownloadMediaRequest, ListBroadcastRecipientsRequest,
};

use crate::on_both_backends;
use crate::support::qontak::Qontak;
use crate::support::{TestApp, TestDb, TestProject, eventually, files, grpc_signed, read};

on_both_backends!(
    media_headers_reach_recipients_as_one_media_message,
    number_check_and_skip_unregistered,
);

/// A loopback file server: `/promo.png` answers `png`, anything else 404; counts requests.
async fn file_server(png: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (counted, png) = (counted.clone(), png.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            if uri.path() == "/promo.png" {
                (axum::http::StatusCode::OK, png)
            } else {
                (axum::http::StatusCode::NOT_FOUND, b"no".to_vec())
            }
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (addr, hits)
}

/// What a session received: (kind, caption/text, file name, bytes) of each message.
async fn inbox(t: &TestApp, session_id: &str) -> Vec<(String, String, Option<String>, Vec<u8>)> {
    let db = t.db.open();
    let id = wagate::values::SessionId::from(session_id);
    let rows = db
        .run(move |c| wagate::storage::inbound::list_inbound(c, &id, 100, 0))
        .await
        .unwrap();
    let mut out = Vec::new();
    for r in rows {
        let blob = match r.media_id.clone() {
            Some(m) => db
                .run(move |c| wagate::storage::media::media_bytes(c, &m))
                .await
                .unwrap(),
            None => None,
        };
        out.push((
            r.kind,
            r.body.unwrap_or_default(),
            blob.as_ref().and_then(|b| b.filename.clone()),
            blob.map(|b| b.data).unwrap_or_default(),
        ));
    }
    out
}

async fn recipients(t: &TestApp, p: &TestProject, id: &str) -> Vec<BroadcastRecipient> {
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    grpc.list_broadcast_recipients(grpc_signed(
        &p.project_wide(),
        "/wagate.v1.BroadcastsService/ListBroadcastRecipients",
        ListBroadcastRecipientsRequest {
            broadcast_id: id.to_owned(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .recipients
}

/// A campaign's recipients once none is left to dispatch or to deliver.
async fn settled(t: &TestApp, p: &TestProject, id: &str) -> Vec<BroadcastRecipient> {
    eventually(60, "the campaign settles", || async {
        let r = recipients(t, p, id).await;
        r.iter()
            .all(|x| matches!(x.status.as_str(), "delivered" | "read" | "failed"))
            .then_some(r)
    })
    .await
}

async fn template(q: &Qontak<'_>, name: &str, header: Value) -> String {
    let body = json!({
        "name": name, "category": "MARKETING", "language": "id",
        "components": [
            header,
            {"type": "BODY", "text": "Hi {{1}}, our sale starts today."},
            {"type": "FOOTER", "text": "Reply STOP to opt out"}
        ]
    });
    let (code, made) = q.post("/qontak/chat/v1/templates/whatsapp", &body).await;
    assert_eq!(code, 201, "{made}");
    made["data"]["id"].as_str().unwrap().to_owned()
}

async fn contact_list(q: &Qontak<'_>, rows: &[(&str, &str)]) -> String {
    let mut csv = "phone_number,full_name\n".to_owned();
    for (phone, name) in rows {
        csv.push_str(&format!("{phone},{name}\n"));
    }
    let (ct, body) = wagate::client::Multipart::new()
        .text("name", "customers")
        .file("file", "c.csv", "text/csv", csv.as_bytes())
        .finish();
    let (code, list) = read(
        q.request(
            reqwest::Method::POST,
            "/qontak/chat/v1/contacts/contact_lists/async",
        )
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{list}");
    let id = list["data"]["id"].as_str().unwrap().to_owned();
    let path = format!("/qontak/chat/v1/contacts/contact_lists/{id}");
    eventually(30, "the list is imported", || async {
        let (_, l) = q.get(&path).await;
        (l["data"]["progress"] == "success").then_some(())
    })
    .await;
    id
}

fn caption(name: &str) -> String {
    format!("Hi {name}, our sale starts today.\n\n_Reply STOP to opt out_")
}

async fn media_headers_reach_recipients_as_one_media_message(db: TestDb) {
    let t = TestApp::init(db)
        .configure(|s| {
            s.broadcasts.pacing_min = std::time::Duration::ZERO;
            s.broadcasts.pacing_max = std::time::Duration::ZERO;
            // The file server is on loopback: allowed as for webhook receivers.
            s.webhooks.allow_private = true;
        })
        .with_sessions(3)
        .start()
        .await;
    let (p, a, b, c) = (
        t.project().clone(),
        t.session(0).clone(),
        t.session(1).clone(),
        t.session(2).clone(),
    );
    let q = Qontak::new(&t, &p);
    let mut png = files::PNG.to_vec();
    png.extend(std::iter::repeat_n(7u8, 4000));
    let (addr, hits) = file_server(png.clone()).await;

    // An IMAGE header with its default media on the file server, to a list of B and C.
    let image = template(
        &q,
        "sale",
        json!({"type": "HEADER", "format": "IMAGE",
               "example": {"header_handle": [format!("http://{addr}/promo.png")]}}),
    )
    .await;
    let list = contact_list(&q, &[(&b.phone_number, "Budi"), (&c.phone_number, "Cici")]).await;
    let bulk = json!({
        "name": "Sale", "message_template_id": image, "contact_list_id": list,
        "channel_integration_id": a.session_id, "language": {"code": "id"},
        "parameters": {"body": [{"key": "1", "value": "full_name"}]}
    });
    let (code, made) = q.post("/qontak/chat/v1/broadcasts/whatsapp", &bulk).await;
    assert_eq!(code, 201, "{made}");
    let sale = made["data"]["id"].as_str().unwrap().to_owned();
    for (s, name) in [(&b, "Budi"), (&c, "Cici")] {
        let got = eventually(60, "the image arrives", || async {
            inbox(&t, &s.session_id)
                .await
                .into_iter()
                .find(|m| m.0 == "image")
        })
        .await;
        assert_eq!(got.1, caption(name));
        assert_eq!(got.3, png, "the very file served");
    }
    let log = settled(&t, &p, &sale).await;
    assert!(
        log.iter()
            .all(|r| matches!(r.status.as_str(), "delivered" | "read")),
        "{log:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once per campaign");

    // A DOCUMENT header from an uploaded file: file_uploader answers its URL, and the send
    // names the file; no HTTP round trip for it.
    let mut pdf = files::PDF.to_vec();
    pdf.extend(std::iter::repeat_n(b' ', 2000));
    let (ct, body) = wagate::client::Multipart::new()
        .file("file", "price-list.pdf", "application/pdf", &pdf)
        .finish();
    let (code, up) = read(
        q.request(reqwest::Method::POST, "/qontak/chat/v1/file_uploader")
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{up}");
    assert_eq!(up["status"], "success");
    let url = up["data"]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("http://") && url.contains("/api/v1/media/"),
        "{url}"
    );
    assert_eq!(up["data"]["mime_type"], "application/pdf");
    // The URL names the stored file, which the project downloads.
    let media_id = up["data"]["media_id"].as_str().unwrap().to_owned();
    assert!(url.ends_with(&media_id), "{url}");
    let mut messaging = MessagingServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let mut chunks = messaging
        .download_media(grpc_signed(
            &p.project_wide(),
            "/wagate.v1.MessagingService/DownloadMedia",
            DownloadMediaRequest { media_id },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut stored = Vec::new();
    while let Some(c) = chunks.message().await.unwrap() {
        stored.extend(c.data);
    }
    assert_eq!(stored, pdf);

    let doc = template(
        &q,
        "price_list",
        json!({"type": "HEADER", "format": "DOCUMENT"}),
    )
    .await;
    let direct = json!({
        "to_number": b.phone_number, "to_name": "Budi",
        "message_template_id": doc, "channel_integration_id": a.session_id,
        "language": {"code": "id"},
        "parameters": {
            "header": {"format": "DOCUMENT", "params": [
                {"key": "url", "value": url}, {"key": "filename", "value": "Prices December.pdf"}
            ]},
            "body": [{"key": "1", "value": "name", "value_text": "Budi"}]
        }
    });
    let (code, sent) = q
        .post("/qontak/chat/v1/broadcasts/whatsapp/direct", &direct)
        .await;
    assert_eq!(code, 201, "{sent}");
    let got = eventually(60, "the document arrives", || async {
        inbox(&t, &b.session_id)
            .await
            .into_iter()
            .find(|m| m.0 == "document")
    })
    .await;
    assert_eq!(got.1, caption("Budi"));
    assert_eq!(got.2.as_deref(), Some("Prices December.pdf"));
    assert_eq!(got.3, pdf);

    // A URL that answers 404: the recipients fail with the code, the URL asked once.
    let before = hits.load(Ordering::SeqCst);
    let mut bad = bulk.clone();
    bad["name"] = json!("Broken");
    bad["parameters"]["header"] = json!({"format": "IMAGE", "params": [
        {"key": "url", "value": format!("http://{addr}/missing.png")}
    ]});
    let (code, made) = q.post("/qontak/chat/v1/broadcasts/whatsapp", &bad).await;
    assert_eq!(code, 201, "{made}");
    let broken = made["data"]["id"].as_str().unwrap().to_owned();
    let log = settled(&t, &p, &broken).await;
    assert_eq!(log.len(), 2);
    for r in &log {
        assert_eq!(
            (r.status.as_str(), r.error_code.as_str()),
            ("failed", "MEDIA_FETCH_FAILED"),
            "{r:?}"
        );
        assert!(r.error_message.contains("404"), "{r:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), before + 1, "asked once");
    let (_, qlog) = q
        .get(&format!("/qontak/chat/v1/broadcasts/{broken}/whatsapp/log"))
        .await;
    assert_eq!(qlog["data"][0]["status"], "failed", "{qlog}");
    t.shutdown().await;
}

async fn number_check_and_skip_unregistered(db: TestDb) {
    let t = TestApp::init(db)
        .configure(|s| {
            s.broadcasts.pacing_min = std::time::Duration::ZERO;
            s.broadcasts.pacing_max = std::time::Duration::ZERO;
        })
        .with_sessions(2)
        .start()
        .await;
    let (p, a, b) = (
        t.project().clone(),
        t.session(0).clone(),
        t.session(1).clone(),
    );
    let q = Qontak::new(&t, &p);
    let nobody = "6289900002222";

    // Qontak's number check, signed like Mekari's SDK.
    let (code, checked) = q
        .post(
            "/qontak/chat/v1/broadcasts/contacts",
            &json!({"channel_integration_id": a.session_id,
                    "phone_numbers": [format!("+{}", b.phone_number), nobody, "not a number"]}),
        )
        .await;
    assert_eq!(code, 200, "{checked}");
    assert_eq!(
        checked["data"]["contacts"],
        json!([
            {"input": format!("+{}", b.phone_number), "status": "valid", "wa_id": b.phone_number},
            {"input": nobody, "status": "invalid", "wa_id": null},
            {"input": "not a number", "status": "invalid", "wa_id": null}
        ])
    );
    // The native gRPC method, through the project's first connected session.
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let native = grpc
        .check_numbers(grpc_signed(
            &p.project_wide(),
            "/wagate.v1.BroadcastsService/CheckNumbers",
            CheckNumbersRequest {
                session_id: String::new(),
                phone_numbers: vec![a.phone_number.clone(), nobody.into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<(&str, &str)> = native
        .numbers
        .iter()
        .map(|n| (n.status.as_str(), n.wa_id.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [("valid", a.phone_number.as_str()), ("invalid", "")]
    );
    let (code, refused) = q
        .post(
            "/qontak/chat/v1/broadcasts/contacts",
            &json!({"channel_integration_id": a.session_id, "phone_numbers": []}),
        )
        .await;
    assert_eq!(code, 400, "{refused}");

    // A campaign that skips numbers not on WhatsApp: B gets it, the other fails.
    let tid = template(
        &q,
        "hello",
        json!({"type": "HEADER", "format": "TEXT", "text": "Hello"}),
    )
    .await;
    let list = contact_list(&q, &[(&b.phone_number, "Budi"), (nobody, "Nobody")]).await;
    let bulk = json!({
        "name": "Checked", "message_template_id": tid, "contact_list_id": list,
        "channel_integration_id": a.session_id, "language": {"code": "id"},
        "parameters": {"body": [{"key": "1", "value": "full_name"}]},
        "skip_unregistered": true
    });
    let (code, made) = q.post("/qontak/chat/v1/broadcasts/whatsapp", &bulk).await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["data"]["skip_unregistered"], true);
    let id = made["data"]["id"].as_str().unwrap().to_owned();
    let log = settled(&t, &p, &id).await;
    let by_name = |n: &str| log.iter().find(|r| r.full_name == n).unwrap().clone();
    assert!(
        matches!(by_name("Budi").status.as_str(), "delivered" | "read"),
        "{log:?}"
    );
    let skipped = by_name("Nobody");
    assert_eq!(
        (skipped.status.as_str(), skipped.error_code.as_str()),
        ("failed", "NOT_ON_WHATSAPP")
    );
    assert_eq!(skipped.wa_message_id, "", "nothing was sent to it");
    let want = format!("*Hello*\n\n{}", caption("Budi"));
    assert!(
        inbox(&t, &b.session_id).await.iter().any(|m| m.1 == want),
        "B got the text"
    );
    t.shutdown().await;
}
