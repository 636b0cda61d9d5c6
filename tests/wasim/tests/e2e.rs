use std::sync::Arc;
use std::time::Duration;

use wacore::store::in_memory::InMemoryBackend;
use wasim::Server;
use wasim::client::{ClientOptions, TestClient};

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_scan_connected() {
    init_logs();
    let server = Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let backend = Arc::new(InMemoryBackend::new());
    let mut a = TestClient::start(server.addr(), backend.clone(), ClientOptions::default())
        .await
        .unwrap();
    let qr = a.next_qr(Duration::from_secs(10)).await.unwrap();
    let t0 = std::time::Instant::now();
    server.sim().scan(&qr, "15550001111").unwrap();
    a.connected(Duration::from_secs(30)).await.unwrap();
    eprintln!("connected after {:?}", t0.elapsed());
    a.stop().await;
    server.shutdown().await;
}

async fn paired(server: &wasim::ServerHandle, phone: &str) -> TestClient {
    let backend = Arc::new(InMemoryBackend::new());
    let mut c = TestClient::start(server.addr(), backend, ClientOptions::default())
        .await
        .unwrap();
    let qr = c.next_qr(Duration::from_secs(10)).await.unwrap();
    server.sim().scan(&qr, phone).unwrap();
    c.connected(Duration::from_secs(30)).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_roundtrip() {
    use wacore::proto_helpers::MessageExt;
    use whatsapp_rust::types::events::Event;
    init_logs();
    let server = Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (mut a, mut b) = tokio::join!(
        paired(&server, "15550000001"),
        paired(&server, "15550000002")
    );
    let to: whatsapp_rust::Jid = "15550000002@s.whatsapp.net".parse().unwrap();
    let msg = waproto::whatsapp::Message {
        conversation: Some("hello from A".to_string()),
        ..Default::default()
    };
    let sent = tokio::time::timeout(Duration::from_secs(10), a.client().send_message(to, msg))
        .await
        .unwrap()
        .unwrap();
    let text = b
        .wait_for(Duration::from_secs(10), |e| match e {
            Event::Messages(batch) => batch
                .iter()
                .find_map(|m| m.message.text_content().map(|s| s.to_string())),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(text, "hello from A");
    let id = sent.message_id.clone();
    a.wait_for(Duration::from_secs(10), |e| match e {
        Event::Receipt(r) if r.message_ids.iter().any(|m| m.as_str() == id) => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    a.stop().await;
    b.stop().await;
    server.shutdown().await;
}
