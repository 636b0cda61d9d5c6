// Chat states (typing indicators) a real whatsapp-rust client sends are recorded per
// account and shown on the admin API, in order. Every wait is bounded; loopback only.

use std::sync::Arc;
use std::time::Duration;

use wasim::client::{Admin, ClientOptions, TestClient};
use wasim::wacore::store::in_memory::InMemoryBackend;
use wasim::whatsapp_rust::store::traits::Backend;
use wasim::{ChatstateRecord, Server};

/// Bound for any single expected event or state.
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn typing_indicators_are_recorded_per_account_in_order() {
    let server = Server::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start wasim");
    let admin = Admin::new(server.addr());
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let mut c = TestClient::start(server.addr(), backend, ClientOptions::default())
        .await
        .expect("start client");
    let qr = c.next_qr(WAIT).await.expect("QR code");
    admin.scan(&qr, "15550001001").await.expect("scan");
    c.connected(WAIT).await.expect("connected after scan");

    let to: wasim::whatsapp_rust::Jid = "15550002002@s.whatsapp.net".parse().expect("jid");
    let client = c.client();
    client
        .chatstate()
        .send_composing(&to)
        .await
        .expect("composing");
    client
        .chatstate()
        .send_recording(&to)
        .await
        .expect("recording");
    client.chatstate().send_paused(&to).await.expect("paused");

    let deadline = tokio::time::Instant::now() + WAIT;
    let seen: Vec<ChatstateRecord> = loop {
        let seen = admin
            .chatstates(Some("15550001001"))
            .await
            .expect("chatstates");
        if seen.len() >= 3 {
            break seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "got {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let states: Vec<(&str, Option<&str>)> = seen
        .iter()
        .map(|r| (r.state.as_str(), r.media.as_deref()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("composing", None),
            ("composing", Some("audio")),
            ("paused", None)
        ]
    );
    assert!(seen.iter().all(|r| r.from == "15550001001" && r.device > 0));
    assert!(
        seen.iter().all(|r| r.to == "15550002002@s.whatsapp.net"),
        "{seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // Another account's filter sees none of them.
    assert!(
        admin
            .chatstates(Some("15550002002"))
            .await
            .expect("chatstates")
            .is_empty()
    );
    c.stop().await;
}
