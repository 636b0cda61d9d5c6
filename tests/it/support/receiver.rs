//! A real webhook receiver on loopback: it records every request and answers what the test
//! tells it to (a status, after a delay), and counts the TCP connections it accepted.

use axum::http::HeaderMap;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub answered: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    /// The status every request is answered with.
    pub answer: Arc<AtomicU16>,
    /// How long each request waits before it is answered.
    pub delay_ms: Arc<AtomicU64>,
    /// TCP connections accepted, requests or not.
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let answer = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (h, a, d) = (hits.clone(), answer.clone(), delay_ms.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (h, a, d) = (h.clone(), a.clone(), d.clone());
                async move {
                    let delay = d.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let code = a.load(Ordering::SeqCst);
                    h.lock().unwrap().push(Hit {
                        path: uri.path().to_owned(),
                        headers,
                        body: body.to_vec(),
                        answered: code,
                    });
                    (
                        axum::http::StatusCode::from_u16(code).unwrap(),
                        "receiver says hi",
                    )
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            hits,
            answer,
            delay_ms,
            connections,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The requests answered 2xx at `path`.
    pub fn delivered(&self, path: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.path == path && (200..300).contains(&h.answered))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
