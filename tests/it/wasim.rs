// wasim tests: real whatsapp-rust clients against the loopback WhatsApp server,
// with no gateway in between. Every wait is bounded; every server is loopback.

use std::sync::Arc;
use std::time::Duration;

use wasim::client::{Admin, ClientOptions, TestClient};
use wasim::wacore::proto_helpers::MessageExt;
use wasim::wacore::store::in_memory::InMemoryBackend;
use wasim::wacore::types::presence::ReceiptType;
use wasim::waproto::buffa::MessageField;
use wasim::waproto::whatsapp as wa;
use wasim::whatsapp_rust::download::MediaType;
use wasim::whatsapp_rust::pair_code::PairCodeOptions;
use wasim::whatsapp_rust::store::traits::{Backend, DeviceStore};
use wasim::whatsapp_rust::types::events::Event;
use wasim::whatsapp_rust::wacore::iq::groups::{GroupCreateOptions, GroupParticipantOptions};
use wasim::whatsapp_rust::{Jid, UploadOptions};
use wasim::{Server, ServerHandle};

/// Bound for any single expected event.
const WAIT: Duration = Duration::from_secs(15);

async fn start_server() -> ServerHandle {
    Server::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start wasim")
}

/// A fresh client, paired through the admin API's simulated phone scan.
async fn paired(server: &ServerHandle, phone: &str) -> (TestClient, Arc<dyn Backend>) {
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let mut c = TestClient::start(server.addr(), backend.clone(), ClientOptions::default())
        .await
        .expect("start client");
    let qr = c.next_qr(WAIT).await.expect("QR code");
    Admin::new(server.addr())
        .scan(&qr, phone)
        .await
        .expect("scan");
    c.connected(WAIT).await.expect("Connected after scan");
    (c, backend)
}

fn pn(phone: &str) -> Jid {
    format!("{phone}@s.whatsapp.net").parse().expect("jid")
}

fn text(s: &str) -> wa::Message {
    wa::Message {
        conversation: Some(s.to_string()),
        ..Default::default()
    }
}

async fn send(c: &TestClient, to: &str, msg: wa::Message) -> String {
    tokio::time::timeout(WAIT, c.client().send_message(pn(to), msg))
        .await
        .expect("send timed out")
        .expect("send")
        .message_id
}

/// Waits for an inbound message for which `f` returns `Some`.
async fn recv<T>(c: &mut TestClient, mut f: impl FnMut(&wa::Message) -> Option<T>) -> T {
    c.wait_for(WAIT, |e| match e {
        Event::Messages(batch) => batch.iter().find_map(|m| f(&m.message)),
        _ => None,
    })
    .await
    .expect("inbound message")
}

async fn recv_text(c: &mut TestClient) -> String {
    recv(c, |m| m.text_content().map(str::to_string)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_scan_connects() {
    let server = start_server().await;
    let started = std::time::Instant::now();
    let (c, _) = paired(&server, "15550000100").await;
    // Under the client's 10 s app-state-key wait: nothing timed out.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "pairing took {:?}",
        started.elapsed()
    );
    let accounts = Admin::new(server.addr())
        .accounts()
        .await
        .expect("accounts");
    let acc = &accounts[0];
    assert_eq!(acc["phone"], "15550000100");
    assert_eq!(acc["devices"][0]["connected"], true);
    // The name comes from the phone's app state (setting_pushName), not from the client.
    assert_eq!(c.client().push_name(), "wasim 15550000100");
    c.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_code_links_the_device() {
    let server = start_server().await;
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let mut c = TestClient::start(server.addr(), backend, ClientOptions::default())
        .await
        .expect("start client");
    // The registration connection is up once the first QR shows.
    c.next_qr(WAIT).await.expect("QR code");
    let code = tokio::time::timeout(
        WAIT,
        c.client().pair_with_code(PairCodeOptions {
            phone_number: "15550000150".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("pair_with_code timed out")
    .expect("pair_with_code");
    Admin::new(server.addr())
        .pair_code("15550000150", &code)
        .await
        .expect("enter code");
    c.connected(WAIT).await.expect("Connected after code entry");
    c.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_delivered_acked_and_receipted() {
    let server = start_server().await;
    let ((mut a, _), (mut b, _)) = tokio::join!(
        paired(&server, "15550000201"),
        paired(&server, "15550000202")
    );

    let id = send(&a, "15550000202", text("hello from A")).await;
    assert_eq!(recv_text(&mut b).await, "hello from A");

    let mut acked = false;
    let mut delivered = false;
    a.wait_for(WAIT, |e| {
        match e {
            Event::ServerAck(ack) if ack.id == id => acked = true,
            Event::Receipt(r)
                if r.message_ids.iter().any(|m| m.as_str() == id)
                    && matches!(r.r#type, ReceiptType::Delivered | ReceiptType::Inactive) =>
            {
                delivered = true
            }
            _ => {}
        }
        (acked && delivered).then_some(())
    })
    .await
    .expect("server ack and delivery receipt");

    // B reads it; A sees the read receipt.
    tokio::time::timeout(
        WAIT,
        b.client()
            .mark_as_read(&pn("15550000201"), None, &[id.as_str()]),
    )
    .await
    .expect("mark_as_read timed out")
    .expect("mark_as_read");
    a.wait_for(WAIT, |e| match e {
        Event::Receipt(r)
            if r.message_ids.iter().any(|m| m.as_str() == id)
                && matches!(r.r#type, ReceiptType::Read) =>
        {
            Some(())
        }
        _ => None,
    })
    .await
    .expect("read receipt");

    let log = Admin::new(server.addr())
        .messages()
        .await
        .expect("messages");
    let rec = log
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["id"] == id.as_str())
        .expect("relayed message logged");
    let b_dev = "15550000202:1@s.whatsapp.net";
    assert_eq!(rec["times_relayed"], 1);
    assert_eq!(rec["sent"][b_dev], 1);
    assert_eq!(rec["delivered"][b_dev], 1);
    assert_eq!(rec["read"][b_dev], 1);
    a.stop().await;
    b.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_receives_after_reconnect() {
    let server = start_server().await;
    let ((a, _), (b, b_store)) = tokio::join!(
        paired(&server, "15550000301"),
        paired(&server, "15550000302")
    );
    b.stop().await;
    let admin = Admin::new(server.addr());
    let b_device = || async {
        let accounts = admin.accounts().await.expect("accounts");
        accounts
            .as_array()
            .expect("array")
            .iter()
            .find(|x| x["phone"] == "15550000302")
            .expect("B listed")["devices"][0]
            .clone()
    };
    // The server notices B's socket closing asynchronously.
    tokio::time::timeout(WAIT, async {
        while b_device().await["connected"] == true {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("server saw B disconnect");

    let id = send(&a, "15550000302", text("while you were away")).await;
    // The message is queued for B once the server has processed A's send.
    tokio::time::timeout(WAIT, async {
        while b_device().await["queued"] != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("message queued for offline B");

    let mut b = TestClient::start(server.addr(), b_store, ClientOptions::default())
        .await
        .expect("restart B");
    assert_eq!(recv_text(&mut b).await, "while you were away");

    // B's delivery receipt reaches the server just after B emits the message.
    let record = || async {
        let log = admin.messages().await.expect("messages");
        log.as_array()
            .expect("array")
            .iter()
            .find(|m| m["id"] == id.as_str())
            .expect("logged")
            .clone()
    };
    let b_dev = "15550000302:1@s.whatsapp.net";
    tokio::time::timeout(WAIT, async {
        while record().await["delivered"][b_dev].is_null() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("delivery receipt from B");
    let rec = record().await;
    assert_eq!(rec["queued"], 1);
    assert_eq!(rec["sent"][b_dev], 1, "delivered to B exactly once");
    assert_eq!(rec["delivered"][b_dev], 1);
    a.stop().await;
    b.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_persisted_store_logs_in_without_qr() {
    let server = start_server().await;
    let (a, store) = paired(&server, "15550000401").await;
    a.stop().await;
    // A stored push name is what lets the next login skip the fresh-pairing bootstrap
    // (and its 10 s wait for an app-state key share).
    let device = DeviceStore::load(&*store)
        .await
        .expect("load device")
        .expect("device stored");
    assert_eq!(device.push_name, "wasim 15550000401");

    let mut a = TestClient::start(server.addr(), store, ClientOptions::default())
        .await
        .expect("restart");
    let first = a
        .wait_for(WAIT, |e| match e {
            Event::PairingQrCode(_) => Some("qr"),
            Event::Connected(_) => Some("connected"),
            _ => None,
        })
        .await
        .expect("an outcome");
    assert_eq!(first, "connected", "a restarted client must not show a QR");
    a.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_roundtrips_byte_identical() {
    let server = start_server().await;
    let ((a, _), (mut b, _)) = tokio::join!(
        paired(&server, "15550000501"),
        paired(&server, "15550000502")
    );

    // Image, document, video and audio, each with distinct content.
    for (i, kind) in [
        MediaType::Image,
        MediaType::Document,
        MediaType::Video,
        MediaType::Audio,
    ]
    .into_iter()
    .enumerate()
    {
        let data: Vec<u8> = (0..70_000u32)
            .map(|x| (x.wrapping_mul(31).wrapping_add(i as u32 * 7)) as u8)
            .collect();
        let up = tokio::time::timeout(
            WAIT,
            a.client()
                .upload(data.clone(), kind, UploadOptions::default()),
        )
        .await
        .expect("upload timed out")
        .expect("upload");
        let msg = match kind {
            MediaType::Image => wa::Message {
                image_message: MessageField::some(wa::message::ImageMessage {
                    url: Some(up.url.clone()),
                    direct_path: Some(up.direct_path.clone()),
                    media_key: Some(up.media_key.to_vec()),
                    file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                    file_sha256: Some(up.file_sha256.to_vec()),
                    file_length: Some(up.file_length),
                    media_key_timestamp: Some(up.media_key_timestamp),
                    mimetype: Some("image/jpeg".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            MediaType::Document => wa::Message {
                document_message: MessageField::some(wa::message::DocumentMessage {
                    url: Some(up.url.clone()),
                    direct_path: Some(up.direct_path.clone()),
                    media_key: Some(up.media_key.to_vec()),
                    file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                    file_sha256: Some(up.file_sha256.to_vec()),
                    file_length: Some(up.file_length),
                    media_key_timestamp: Some(up.media_key_timestamp),
                    mimetype: Some("application/pdf".into()),
                    file_name: Some("doc.pdf".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            MediaType::Video => wa::Message {
                video_message: MessageField::some(wa::message::VideoMessage {
                    url: Some(up.url.clone()),
                    direct_path: Some(up.direct_path.clone()),
                    media_key: Some(up.media_key.to_vec()),
                    file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                    file_sha256: Some(up.file_sha256.to_vec()),
                    file_length: Some(up.file_length),
                    media_key_timestamp: Some(up.media_key_timestamp),
                    mimetype: Some("video/mp4".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            _ => wa::Message {
                audio_message: MessageField::some(wa::message::AudioMessage {
                    url: Some(up.url.clone()),
                    direct_path: Some(up.direct_path.clone()),
                    media_key: Some(up.media_key.to_vec()),
                    file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                    file_sha256: Some(up.file_sha256.to_vec()),
                    file_length: Some(up.file_length),
                    media_key_timestamp: Some(up.media_key_timestamp),
                    mimetype: Some("audio/ogg; codecs=opus".into()),
                    ptt: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        send(&a, "15550000502", msg).await;
        let got = recv(&mut b, |m| Some(m.clone())).await;
        let client = b.client();
        let bytes = tokio::time::timeout(WAIT, async {
            if let Some(x) = got.image_message.as_option() {
                client.download(x).await
            } else if let Some(x) = got.document_message.as_option() {
                client.download(x).await
            } else if let Some(x) = got.video_message.as_option() {
                client.download(x).await
            } else if let Some(x) = got.audio_message.as_option() {
                client.download(x).await
            } else {
                panic!("no media in received message: {got:?}")
            }
        })
        .await
        .expect("download timed out")
        .expect("download");
        assert!(bytes == data, "{kind:?} must round-trip byte-identical");
    }
    a.stop().await;
    b.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicked_client_reconnects_by_itself() {
    let server = start_server().await;
    let (mut a, _) = paired(&server, "15550000601").await;
    let closed = Admin::new(server.addr())
        .kick("15550000601")
        .await
        .expect("kick");
    assert_eq!(closed["closed"], 1);
    a.wait_for(WAIT, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await
        .expect("Disconnected after kick");
    a.connected(WAIT).await.expect("reconnected after kick");
    a.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_emits_logged_out() {
    let server = start_server().await;
    let (mut a, _) = paired(&server, "15550000701").await;
    Admin::new(server.addr())
        .logout("15550000701")
        .await
        .expect("logout");
    a.wait_for(WAIT, |e| matches!(e, Event::LoggedOut(_)).then_some(()))
        .await
        .expect("LoggedOut");
    a.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_account_gets_temporary_ban() {
    let server = start_server().await;
    let (mut a, _) = paired(&server, "15550000801").await;
    Admin::new(server.addr())
        .ban("15550000801", 60)
        .await
        .expect("ban");
    a.wait_for(WAIT, |e| matches!(e, Event::TemporaryBan(_)).then_some(()))
        .await
        .expect("TemporaryBan on the next login");
    a.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_device_of_sender_gets_a_copy() {
    let server = start_server().await;
    // The sender's device is linked last: a client syncs its own device list
    // in the background after connecting, and an answer computed before a
    // later device existed may land after the `devices` notification that
    // announced it (as with the real service), leaving the list stale.
    let ((mut a2, _), (mut b, _)) = tokio::join!(
        paired(&server, "15550000901"),
        paired(&server, "15550000902")
    );
    let (a1, _) = paired(&server, "15550000901").await;

    send(&a1, "15550000902", text("to B, copied to A2")).await;
    assert_eq!(recv_text(&mut b).await, "to B, copied to A2");
    let (copy, from_me) = a2
        .wait_for(WAIT, |e| match e {
            Event::Messages(batch) => batch.iter().find_map(|m| {
                let t = m
                    .message
                    .text_content()
                    .or_else(|| {
                        m.message
                            .device_sent_message
                            .as_option()
                            .and_then(|d| d.message.as_option())
                            .and_then(|m| m.text_content())
                    })?
                    .to_string();
                Some((t, m.info.source.is_from_me))
            }),
            _ => None,
        })
        .await
        .expect("copy on the sender's second device");
    assert_eq!(copy, "to B, copied to A2");
    assert!(from_me);
    a1.stop().await;
    a2.stop().await;
    b.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_reach_every_member() {
    let server = start_server().await;
    let ((a, _), (mut b, _), (mut c, _)) = tokio::join!(
        paired(&server, "15550001001"),
        paired(&server, "15550001002"),
        paired(&server, "15550001003")
    );
    let created = tokio::time::timeout(
        WAIT,
        a.client().groups().create_group(
            GroupCreateOptions::builder()
                .subject("wasim group")
                .participants(vec![
                    GroupParticipantOptions::new(pn("15550001002")),
                    GroupParticipantOptions::new(pn("15550001003")),
                ])
                .build(),
        ),
    )
    .await
    .expect("create_group timed out")
    .expect("create_group");
    let gid = created.metadata.id.clone();
    // Members see the group in their group list.
    let listed = tokio::time::timeout(WAIT, b.client().groups().get_participating())
        .await
        .expect("get_participating timed out")
        .expect("get_participating");
    assert!(listed.contains_key(&gid), "B lists the new group");

    // The first message carries the sender key to each member device; the
    // second uses it alone.
    for body in ["hello group", "second to group"] {
        tokio::time::timeout(WAIT, a.client().send_message(gid.clone(), text(body)))
            .await
            .expect("group send timed out")
            .expect("group send");
        for member in [&mut b, &mut c] {
            let (got, chat) = member
                .wait_for(WAIT, |e| match e {
                    Event::Messages(batch) => batch.iter().find_map(|m| {
                        Some((
                            m.message.text_content()?.to_string(),
                            m.info.source.chat.clone(),
                        ))
                    }),
                    _ => None,
                })
                .await
                .expect("group message");
            assert_eq!(got, body);
            assert_eq!(chat, gid);
        }
    }
    a.stop().await;
    b.stop().await;
    c.stop().await;
    server.shutdown().await;
}
