// The number check (usync `contact` protocol) against a real whatsapp-rust
// client: an account wasim has is "in", any other number "out", each answer
// naming the number asked about. Every wait is bounded; the server is loopback.

use std::sync::Arc;
use std::time::Duration;

use wasim::client::{Admin, ClientOptions, TestClient};
use wasim::wacore::store::in_memory::InMemoryBackend;
use wasim::whatsapp_rust::Jid;
use wasim::whatsapp_rust::store::traits::Backend;
use wasim::{Server, ServerHandle};

const WAIT: Duration = Duration::from_secs(15);

async fn paired(server: &ServerHandle, phone: &str) -> TestClient {
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let mut c = TestClient::start(server.addr(), backend, ClientOptions::default())
        .await
        .expect("start client");
    let qr = c.next_qr(WAIT).await.expect("QR code");
    Admin::new(server.addr())
        .scan(&qr, phone)
        .await
        .expect("scan");
    c.connected(WAIT).await.expect("Connected after scan");
    c
}

#[tokio::test]
async fn is_on_whatsapp_answers_registered_and_unknown_numbers() {
    let server = Server::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start wasim");
    let a = paired(&server, "15550001001").await;
    let b = paired(&server, "15550001002").await;
    let asked = [
        Jid::pn("15550001002".to_string()),
        Jid::pn("15550009999".to_string()),
        Jid::pn("15550001001".to_string()),
    ];
    let answers = tokio::time::timeout(WAIT, a.client().contacts().is_on_whatsapp(&asked))
        .await
        .expect("answered in time")
        .expect("usync result");
    let mut got: Vec<(String, bool)> = answers
        .iter()
        .map(|r| (r.jid.user.to_string(), r.is_registered))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("15550001001".to_string(), true),
            ("15550001002".to_string(), true),
            ("15550009999".to_string(), false),
        ]
    );
    // A registered number's answer carries its LID; an unknown one's none.
    let b_answer = answers
        .iter()
        .find(|r| r.jid.user == "15550001002")
        .unwrap();
    assert!(b_answer.lid.is_some(), "{b_answer:?}");
    let unknown = answers
        .iter()
        .find(|r| r.jid.user == "15550009999")
        .unwrap();
    assert!(unknown.lid.is_none(), "{unknown:?}");
    a.stop().await;
    b.stop().await;
}
