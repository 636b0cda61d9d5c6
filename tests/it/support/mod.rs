//! Shared test support. A test builds what it needs with [`TestApp`]: a real gateway on a
//! loopback port over its own database ([`TestDb`]: a temp SQLite file, or a PostgreSQL
//! database cloned from a migrated template when WAGATE_TEST_DATABASE_URL is set), with wasim,
//! a project, linked sessions and a webhook receiver as asked. Below: clients that sign
//! requests the way the RK and Qontak documents describe, and small waiting and asserting
//! helpers.

pub mod app;
pub mod db;
pub mod qontak;
pub mod receiver;
pub mod session;

use std::time::Duration;
use wagate::client;

pub use app::{TestApp, TestProject, seed_project};
pub use db::{TestDb, exec_sql};
pub use receiver::Hit;

/// Runs one scenario on SQLite and on PostgreSQL (`<name>::sqlite`, `<name>::postgres`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::TestDb::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::support::TestDb::postgres() {
                    super::$name(db).await
                }
            }
        }
    )+};
}

/// Rate-limit windows are calendar minutes: start a burst well inside one (with 20 s to
/// spare for a loaded machine).
pub async fn clear_of_minute_boundary() {
    let into = chrono::Utc::now().timestamp_millis().rem_euclid(60_000);
    if into > 40_000 {
        tokio::time::sleep(Duration::from_millis((60_500 - into) as u64)).await;
    }
}

/// A gRPC request signed as the README describes (key, timestamp, method, message bytes).
pub fn grpc_signed<T: prost::Message>(p: &TestProject, path: &str, msg: T) -> tonic::Request<T> {
    let ts = client::unix_now();
    let sig = client::grpc_signature(&p.api_key, &p.api_secret, &ts, path, &msg.encode_to_vec());
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert("x-api-key", p.api_key.parse().unwrap());
    md.insert("x-timestamp", ts.parse().unwrap());
    md.insert("x-signature", sig.parse().unwrap());
    if !p.device_code.is_empty() {
        md.insert("x-device-code", p.device_code.parse().unwrap());
    }
    req
}

/// A signed call made the way a browser makes it over grpc-web: HTTP/1.1 POST,
/// `application/grpc-web+proto`, the message in one length-prefixed frame.
pub async fn grpc_web_call(
    t: &TestApp,
    p: &TestProject,
    path: &str,
    msg: &[u8],
) -> reqwest::Response {
    let ts = client::unix_now();
    let sig = client::grpc_signature(&p.api_key, &p.api_secret, &ts, path, msg);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(msg);
    let mut req = t
        .http
        .post(t.url(path))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "http://console.example")
        .header("x-api-key", &p.api_key)
        .header("x-timestamp", &ts)
        .header("x-signature", sig);
    if !p.device_code.is_empty() {
        req = req.header("x-device-code", &p.device_code);
    }
    let resp = req.body(frame).send().await.expect("grpc-web request");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    resp
}

/// A grpc-web call's body so far: its frames (flag, payload) as they arrive.
pub struct WebFrames {
    pub resp: reqwest::Response,
    pub buf: Vec<u8>,
}

impl WebFrames {
    pub fn new(resp: reqwest::Response) -> Self {
        WebFrames {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next whole frame; `None` when the body ended.
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let frame: Vec<u8> = self.buf.drain(..5 + len).collect();
                    return Some((frame[0], frame[5..].to_vec()));
                }
            }
            let chunk = self.resp.chunk().await.expect("body chunk")?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next stream message, which must come within 20 s as a data frame.
    pub async fn message<M: prost::Message + Default>(&mut self) -> M {
        let (flag, data) = tokio::time::timeout(Duration::from_secs(20), self.next())
            .await
            .expect("a stream message in time")
            .expect("the stream stays open");
        assert_eq!(
            flag,
            0,
            "a data frame, not trailers: {}",
            String::from_utf8_lossy(&data)
        );
        M::decode(data.as_slice()).expect("a stream message")
    }
}

/// Polls `f` every 100 ms until it yields `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn read(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({code}): {text}"));
    (code, json)
}

/// Asserts the documented error envelope with `code`.
pub fn assert_error(got: &(u16, serde_json::Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["success"], false, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}

/// Smallest files each allowed format is recognised by (magic bytes).
pub mod files {
    pub const JPEG: &[u8] =
        b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xFF\xD9";
    pub const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00";
    pub const PDF: &[u8] = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n";
    pub const MP4: &[u8] = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2\x00\x00\x00\x08free";
    pub const OGG: &[u8] = b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1eOpusHead";
    pub const MP3: &[u8] = b"ID3\x04\x00\x00\x00\x00\x00\x00\xFF\xFB\x90\x64\x00\x00\x00\x00";
    pub const EXE: &[u8] = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xFF\xFF\x00\x00";
}
