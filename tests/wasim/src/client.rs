//! Test-client harness: real whatsapp-rust bots pointed at a wasim server.
//!
//! The pieces are public on their own so other code (wagate's sessions in
//! simulator mode) can point its own bots at wasim:
//! - [`transport_factory`]: the stock tokio websocket transport dialling
//!   `ws://ADDR/ws/chat` instead of WhatsApp's edge.
//! - [`SimHttpClient`]: an [`HttpClient`] that sends the client's media
//!   upload/download requests (which name `https://<media host>/...`) to
//!   wasim's plain-HTTP media host instead.
//! - [`TestClient`]: a spawned bot plus a bounded channel of its events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle, EventDelivery};
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::{Client, TokioRuntime};

use crate::conns::{ConnRecord, Overlap};
use crate::state::ChatstateRecord;

/// Version the harness reports, so the client never fetches one over HTTP.
pub const CLIENT_VERSION: (u32, u32, u32) = (2, 3000, 1_023_000_000);

/// Events buffered per test client before new ones are dropped (and logged).
const EVENT_BUFFER: usize = 4096;

/// The tokio websocket transport, dialling `ws_url` (e.g. `ws://127.0.0.1:PORT/ws/chat`).
pub fn transport_factory(ws_url: &str) -> TokioWebSocketTransportFactory {
    TokioWebSocketTransportFactory::new().with_url(ws_url.to_string())
}

/// Routes every request's scheme and authority to wasim's HTTP address,
/// keeping path and query: the client builds `https://<host from media_conn>/…`
/// URLs, and wasim serves media over plain HTTP on its one port.
#[derive(Clone, Debug)]
pub struct SimHttpClient {
    addr: SocketAddr,
}

impl SimHttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// The client for the server behind a chat URL such as
    /// `ws://127.0.0.1:8990/ws/chat` (media shares the chat port).
    pub fn for_ws_url(ws_url: &str) -> Result<Self> {
        let rest = ws_url
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("not a ws:// URL: {ws_url}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let addr = authority
            .parse()
            .with_context(|| format!("{authority} is not an IP:port address"))?;
        Ok(Self { addr })
    }

    fn path_of(url: &str) -> Result<String> {
        let rest = url
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("not an absolute URL: {url}"))?;
        Ok(match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        })
    }
}

/// One HTTP/1.1 exchange is bounded by this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Response bodies beyond this are refused.
const MAX_RESPONSE: usize = 128 << 20;

#[async_trait::async_trait]
impl HttpClient for SimHttpClient {
    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse> {
        tokio::time::timeout(HTTP_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| anyhow!("wasim HTTP request timed out"))?
    }
}

impl SimHttpClient {
    /// A minimal HTTP/1.1 client (`Connection: close`, `Content-Length`
    /// bodies): enough for loopback media, and no extra HTTP stack to build.
    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse> {
        let path = Self::path_of(&request.url)?;
        let body = request.body.unwrap_or_default();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            request.method,
            path,
            self.addr,
            body.len()
        );
        for (k, v) in &request.headers {
            if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("host") {
                continue;
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .context("connect to wasim media host")?;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64 + 64 * 1024)
            .read_to_end(&mut raw)
            .await?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow!("malformed HTTP response"))?;
        let head = std::str::from_utf8(&raw[..split])?;
        let status_code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("no status in HTTP response"))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let mut body = raw[split + 4..].to_vec();
        if chunked {
            body = dechunk(&body)?;
        }
        if body.len() > MAX_RESPONSE {
            bail!("HTTP response too large");
        }
        Ok(HttpResponse { status_code, body })
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_str = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Options for [`TestClient::start`].
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// A push name to start with. Unset, the client learns the account's name
    /// from the phone's app state, as a freshly linked device does.
    pub push_name: Option<String>,
}

/// A running whatsapp-rust bot connected to a wasim server, with its events.
pub struct TestClient {
    handle: Option<BotHandle>,
    client: Arc<Client>,
    /// Every event the bot emits, in arrival order.
    pub events: mpsc::Receiver<Arc<Event>>,
}

impl TestClient {
    /// Builds and spawns a bot on `backend`. Keep the backend's `Arc` to
    /// rebuild a bot on the same store later (a "restart").
    pub async fn start(
        server_addr: SocketAddr,
        backend: Arc<dyn Backend>,
        opts: ClientOptions,
    ) -> Result<Self> {
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let mut builder = Bot::builder()
            .with_backend_arc(backend)
            .with_transport_factory(transport_factory(&format!("ws://{server_addr}/ws/chat")))
            .with_http_client(SimHttpClient::new(server_addr))
            .with_runtime(TokioRuntime)
            .with_version(CLIENT_VERSION)
            .skip_history_sync()
            // In arrival order (the default spawns a task per event, unordered).
            .with_event_delivery(EventDelivery::Ordered {
                capacity: EVENT_BUFFER,
            })
            .on_event(move |ev, _client| {
                let tx = tx.clone();
                async move {
                    if tx.try_send(ev).is_err() {
                        tracing::warn!("test client event buffer full; event dropped");
                    }
                }
            });
        if let Some(name) = opts.push_name {
            builder = builder.with_push_name(name);
        }
        let bot = builder
            .build()
            .await
            .map_err(|e| anyhow!("build bot: {e}"))?;
        let client = bot.client();
        let handle = bot.spawn();
        Ok(Self {
            handle: Some(handle),
            client,
            events,
        })
    }

    pub fn client(&self) -> Arc<Client> {
        self.client.clone()
    }

    /// Waits up to `timeout` for an event `f` maps to `Some`, skipping others.
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| anyhow!("timed out after {timeout:?} waiting for an event"))?
                .ok_or_else(|| anyhow!("event channel closed"))?;
            if let Some(v) = f(&ev) {
                return Ok(v);
            }
        }
    }

    /// Next QR code string.
    pub async fn next_qr(&mut self, timeout: Duration) -> Result<String> {
        self.wait_for(timeout, |e| match e {
            Event::PairingQrCode(q) => Some(q.code.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for `Connected`.
    pub async fn connected(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for(timeout, |e| matches!(e, Event::Connected(_)).then_some(()))
            .await
    }

    /// Stops the bot gracefully (bounded), keeping the backend intact.
    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            let client = self.client.clone();
            let _ = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await;
            if tokio::time::timeout(Duration::from_secs(5), h.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("bot did not shut down in time; aborted");
            }
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Thin client for wasim's admin API, for tests that drive the simulated
/// phone and faults over HTTP exactly as an external tool would.
#[derive(Clone, Debug)]
pub struct Admin {
    http: SimHttpClient,
    addr: SocketAddr,
}

impl Admin {
    pub fn new(server_addr: SocketAddr) -> Self {
        Self {
            http: SimHttpClient::new(server_addr),
            addr: server_addr,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("http://{}/admin/{path}", self.addr);
        let mut req = if method == "GET" {
            HttpRequest::get(url)
        } else {
            HttpRequest::post(url)
        };
        if let Some(b) = body {
            req = req
                .with_header("Content-Type", "application/json")
                .with_body(serde_json::to_vec(&b)?);
        }
        let resp = self.http.execute(req).await?;
        let value: serde_json::Value = if resp.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&resp.body)?
        };
        if resp.status_code >= 400 {
            bail!("admin {method} {path}: {} {value}", resp.status_code);
        }
        Ok(value)
    }

    /// The simulated phone scans `qr` for account `phone` (digits).
    pub async fn scan(&self, qr: &str, phone: &str) -> Result<serde_json::Value> {
        self.call(
            "POST",
            "scan",
            Some(serde_json::json!({ "qr": qr, "phone": phone })),
        )
        .await
    }

    /// The phone's user types the companion's pairing `code` for `phone`.
    pub async fn pair_code(&self, phone: &str, code: &str) -> Result<serde_json::Value> {
        self.call(
            "POST",
            "pair-code",
            Some(serde_json::json!({ "phone": phone, "code": code })),
        )
        .await
    }

    /// Drops every connection of the account (clients reconnect by themselves).
    pub async fn kick(&self, phone: &str) -> Result<serde_json::Value> {
        self.call("POST", &format!("accounts/{phone}/kick"), None)
            .await
    }

    /// Unlinks every device of the account (clients see `LoggedOut`).
    pub async fn logout(&self, phone: &str) -> Result<serde_json::Value> {
        self.call("POST", &format!("accounts/{phone}/logout"), None)
            .await
    }

    /// Refuses the account's logins for `seconds` (0 lifts it).
    pub async fn ban(&self, phone: &str, seconds: u64) -> Result<serde_json::Value> {
        self.call(
            "POST",
            &format!("accounts/{phone}/ban"),
            Some(serde_json::json!({ "seconds": seconds })),
        )
        .await
    }

    /// Holds every login unanswered (`true`); `false` answers the held ones.
    pub async fn hold_logins(&self, hold: bool) -> Result<serde_json::Value> {
        self.call(
            "POST",
            "hold-logins",
            Some(serde_json::json!({ "hold": hold })),
        )
        .await
    }

    /// Refuses client versions older than `version` at login (405); `None` lifts it.
    pub async fn min_version(&self, version: Option<(u32, u32, u32)>) -> Result<serde_json::Value> {
        let v = version.map(|(a, b, c)| format!("{a}.{b}.{c}"));
        self.call(
            "POST",
            "min-version",
            Some(serde_json::json!({ "version": v })),
        )
        .await
    }

    pub async fn accounts(&self) -> Result<serde_json::Value> {
        self.call("GET", "accounts", None).await
    }

    pub async fn messages(&self) -> Result<serde_json::Value> {
        self.call("GET", "messages", None).await
    }

    /// The chat states (typing indicators) devices sent (`GET /admin/chatstates`), oldest
    /// first; `from` (a phone number) keeps only that account's.
    pub async fn chatstates(&self, from: Option<&str>) -> Result<Vec<ChatstateRecord>> {
        let path = match from {
            Some(f) if f.bytes().all(|b| b.is_ascii_digit()) => format!("chatstates?from={f}"),
            Some(_) => bail!("from is a phone number (digits)"),
            None => "chatstates".to_owned(),
        };
        let v = self.call("GET", &path, None).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// The connection log (`GET /admin/connections`), oldest first; `device`
    /// (a device JID or a phone number) keeps only that device's connections.
    pub async fn connections(&self, device: Option<&str>) -> Result<Vec<ConnRecord>> {
        let v = self
            .call("GET", &with_device("connections", device), None)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Connections of one device that were in use at the same time
    /// (`GET /admin/connections/overlaps`, see [`crate::conns::overlaps`]).
    pub async fn connection_overlaps(&self, device: Option<&str>) -> Result<Vec<Overlap>> {
        let v = self
            .call("GET", &with_device("connections/overlaps", device), None)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Closes connections whose client sends no frame for `timeout`; `None` turns it off.
    pub async fn idle_timeout(&self, timeout: Option<Duration>) -> Result<serde_json::Value> {
        let ms = timeout.map(|t| t.as_millis() as u64);
        self.call(
            "POST",
            "idle-timeout",
            Some(serde_json::json!({ "ms": ms })),
        )
        .await
    }
}

/// `path?device=…`, the device percent-encoded.
fn with_device(path: &str, device: Option<&str>) -> String {
    let Some(d) = device else {
        return path.to_string();
    };
    let mut q = String::with_capacity(d.len());
    for b in d.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{path}?device={q}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_urls_keep_path_and_query() {
        assert_eq!(
            SimHttpClient::path_of("https://mmg.example:443/mms/image/T?auth=a&token=T").unwrap(),
            "/mms/image/T?auth=a&token=T"
        );
        assert_eq!(SimHttpClient::path_of("http://h").unwrap(), "/");
        assert!(SimHttpClient::path_of("/relative").is_err());
    }

    #[test]
    fn ws_url_names_the_media_address() {
        let c = SimHttpClient::for_ws_url("ws://127.0.0.1:8990/ws/chat").unwrap();
        assert_eq!(c.addr, "127.0.0.1:8990".parse().unwrap());
        assert!(SimHttpClient::for_ws_url("ws://localhost:1/ws/chat").is_err());
    }

    #[test]
    fn device_queries_are_percent_encoded() {
        assert_eq!(
            with_device("connections", Some("1555:1@s.whatsapp.net")),
            "connections?device=1555%3A1%40s.whatsapp.net"
        );
        assert_eq!(with_device("connections", None), "connections");
    }

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
    }
}
