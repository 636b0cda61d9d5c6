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
