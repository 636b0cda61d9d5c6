//! Limits of the HTTP server that no request can exceed, authenticated or not: how many
//! connections are open, how long a new connection may stay silent, how long a request
//! body may take, and how many bytes of large bodies are in transit at once.
//!
//! hyper enforces the rest: an HTTP/1 request head must arrive within 30 s (also between
//! keep-alive requests, so an idle HTTP/1 connection closes after 30 s), and HTTP/2
//! connections are pinged every 30 s and dropped when a ping goes unanswered for 20 s.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::domain::Gateway;
use crate::transport::error::Refusal;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Tunables (flags and environment variables in `config`).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A new connection that sends nothing for this long is closed.
    pub first_byte_timeout: Duration,
    /// A request body must have arrived whole this long after its head (`408`).
    pub body_timeout: Duration,
    /// Bytes of request bodies beyond [`SMALL_BODY_BYTES`] in transit at once, all requests
    /// together; a body that cannot get its share within [`BODY_BUDGET_WAIT`] is `503`.
    pub body_budget_bytes: usize,
    /// With a token, `/metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Serve `/metrics` on this address only (e.g. a private interface), not on the API port.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Proxies whose `X-Forwarded-For` names the client (per-IP limits); others' is ignored.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_connections: 4096,
            first_byte_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            body_budget_bytes: 256 * 1024 * 1024,
            metrics_token: None,
            metrics_listen: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Bodies up to this size are never held back by the budget (JSON, gRPC text messages).
pub const SMALL_BODY_BYTES: usize = 64 * 1024;
/// How long a large body waits for its share of the budget.
pub const BODY_BUDGET_WAIT: Duration = Duration::from_secs(5);
const BUDGET_UNIT: usize = 1024;

/// An address range (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not an address or CIDR range: {s}");
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client address for per-IP limits: the peer, or — when the peer is a trusted proxy —
/// the last `X-Forwarded-For` address that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(chain) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in chain.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Accepted connections, at most `max_connections` at once, each closed if it stays silent
/// past `first_byte_timeout` (hyper's own timeouts start only once it has bytes).
pub fn incoming(
    listener: TcpListener,
    settings: &HttpSettings,
) -> impl Stream<Item = io::Result<GuardedIo>> + Send + 'static {
    let open = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let first_byte = settings.first_byte_timeout;
    futures::stream::unfold((listener, open), move |(listener, open)| async move {
        let permit = open.clone().acquire_owned().await.expect("never closed");
        let item = match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                Ok(GuardedIo {
                    inner: stream,
                    silence: Some(Box::pin(tokio::time::sleep(first_byte))),
                    rewrite: None,
                    _permit: permit,
                })
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                drop(permit);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(e)
            }
        };
        Some((item, (listener, open)))
    })
}

/// A connection that counts against the connection limit while open and fails its reads
/// when its first byte does not come in time.
pub struct GuardedIo {
    inner: TcpStream,
    silence: Option<Pin<Box<Sleep>>>,
    /// hyper's bodiless answer to an unparsable request, replaced by ours: (bytes, written,
    /// length of hyper's buffer to report once ours is out).
    rewrite: Option<(Vec<u8>, usize, usize)>,
    _permit: OwnedSemaphorePermit,
}

/// hyper answers a request it cannot parse (head too large, URI too long, malformed) itself,
/// with an empty body, before any handler runs. Such a head is recognised as it is written
/// and replaced by the same status with the REST error envelope; hyper closes the connection
/// right after, so nothing else is affected. Our own answers always carry a content type.
fn envelope_for_protocol_error(head: &[u8]) -> Option<Vec<u8>> {
    let (status, code, message) = if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "HEADERS_TOO_LARGE",
            "the request head is too large (at most 100 headers, about 400 KiB)",
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        (
            "414 URI Too Long",
            "URI_TOO_LONG",
            "the request URI is too long",
        )
    } else if head.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "MALFORMED_REQUEST",
            "malformed HTTP request",
        )
    } else {
        return None;
    };
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if !text.contains("\r\ncontent-length: 0\r\n") || text.contains("\r\ncontent-type:") {
        return None;
    }
    let body = serde_json::json!({"success": false, "message": message, "code": code}).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl tonic::transport::server::Connected for GuardedIo {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.silence.is_some() {
            match &polled {
                Poll::Ready(Ok(())) if buf.filled().len() > before => self.silence = None,
                Poll::Pending => {
                    if let Some(s) = self.silence.as_mut()
                        && s.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request on a new connection",
                        )));
                    }
                }
                _ => {}
            }
        }
        polled
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_none()
            && let Some(ours) = envelope_for_protocol_error(buf)
        {
            this.rewrite = Some((ours, 0, buf.len()));
        }
        if let Some((ours, written, reported)) = &mut this.rewrite
            && *written < ours.len()
        {
            while *written < ours.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &ours[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            return Poll::Ready(Ok(*reported));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    // Not vectored: every head passes through `poll_write`, where it can be recognised.
}

/// Why a request body could not be read in full; found by [`BodyLimitError::find`] in the
/// error a body reader reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyLimitError {
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("too many large request bodies in transit")]
    Busy,
}

impl BodyLimitError {
    /// The limit behind a body-reading error, if one was the cause.
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(l) = err.downcast_ref::<BodyLimitError>() {
                return Some(*l);
            }
            cur = err.source();
        }
        None
    }
}

/// Reads a request body of at most `limit` bytes. REST handlers and the gRPC auth
/// middleware call it only once the caller is known, so an unknown key is refused before a
/// byte of its body is held; [`guard_body`] bounds how long it may take and how much is in
/// transit at once.
pub async fn read_body(gw: &Gateway, body: Body, limit: usize) -> Result<Bytes, Refusal> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| body_read_error(gw, &e))?;
        if buf.len() + chunk.len() > limit {
            return Err(Refusal::PayloadTooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// What a failed body read means for the client.
pub fn body_read_error(gw: &Gateway, e: &(dyn std::error::Error + 'static)) -> Refusal {
    match BodyLimitError::find(e) {
        Some(BodyLimitError::Timeout) => {
            Refusal::RequestTimeout(gw.settings().http.body_timeout.as_secs())
        }
        Some(BodyLimitError::Busy) => Refusal::Busy,
        None => Refusal::InvalidParameter(format!("cannot read request body: {e}")),
    }
}

/// Shared by every request of a server.
#[derive(Clone)]
pub struct BodyGuard {
    budget: Arc<Semaphore>,
    timeout: Duration,
}

impl BodyGuard {
    pub fn new(s: &HttpSettings) -> Self {
        let units = (s.body_budget_bytes / BUDGET_UNIT).clamp(1, Semaphore::MAX_PERMITS);
        BodyGuard {
            budget: Arc::new(Semaphore::new(units)),
            timeout: s.body_timeout,
        }
    }
}

/// Middleware: every request body gets the deadline and draws on the budget as it arrives.
pub async fn guard_body(State(guard): State<BodyGuard>, req: Request, next: Next) -> Response {
    let req = req.map(|inner| {
        Body::new(GuardedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(guard.timeout)),
            budget: guard.budget.clone(),
            seen: 0,
            held: None,
            waiting: None,
            done: false,
        })
    });
    next.run(req).await
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, BodyLimitError>> + Send>>;

struct GuardedBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    budget: Arc<Semaphore>,
    /// Bytes received so far.
    seen: usize,
    held: Option<OwnedSemaphorePermit>,
    /// A frame that waits for its share of the budget.
    waiting: Option<(Frame<Bytes>, Acquire)>,
    done: bool,
}

impl GuardedBody {
    /// Budget units a frame needs: only the part beyond the free allowance.
    fn units_for(&self, len: usize) -> u32 {
        let before = self.seen.max(SMALL_BODY_BYTES);
        let after = (self.seen + len).max(SMALL_BODY_BYTES);
        let units = after.div_ceil(BUDGET_UNIT) - before.div_ceil(BUDGET_UNIT);
        units.min(Semaphore::MAX_PERMITS) as u32
    }

    fn keep(&mut self, permit: OwnedSemaphorePermit) {
        match &mut self.held {
            Some(h) => h.merge(permit),
            None => self.held = Some(permit),
        }
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(axum::Error::new(BodyLimitError::Timeout))));
        }
        if let Some((_, acquire)) = &mut this.waiting {
            let permit = ready!(acquire.as_mut().poll(cx));
            let (frame, _) = this.waiting.take().expect("waiting");
            return match permit {
                Ok(p) => {
                    this.keep(p);
                    Poll::Ready(Some(Ok(frame)))
                }
                Err(e) => {
                    this.done = true;
                    Poll::Ready(Some(Err(axum::Error::new(e))))
                }
            };
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => {
                this.done = true;
                return Poll::Ready(None);
            }
        };
        let len = frame.data_ref().map_or(0, Bytes::len);
        let units = this.units_for(len);
        this.seen += len;
        if units == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.budget.clone().try_acquire_many_owned(units) {
            Ok(p) => {
                this.keep(p);
                Poll::Ready(Some(Ok(frame)))
            }
            Err(_) => {
                let budget = this.budget.clone();
                let acquire: Acquire = Box::pin(async move {
                    match tokio::time::timeout(BODY_BUDGET_WAIT, budget.acquire_many_owned(units))
                        .await
                    {
                        Ok(Ok(p)) => Ok(p),
                        _ => Err(BodyLimitError::Busy),
                    }
                });
                this.waiting = Some((frame, acquire));
                Pin::new(this).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.waiting.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_protocol_errors_get_the_envelope() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let ours = String::from_utf8(envelope_for_protocol_error(hyper).unwrap()).unwrap();
        assert!(ours.starts_with("HTTP/1.1 431 "), "{ours}");
        let (head, body) = ours.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{ours}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{ours}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["success"].as_bool(), v["code"].as_str()),
            (Some(false), Some("HEADERS_TOO_LARGE"))
        );
        // Our own answers (with a content type) pass untouched.
        let app = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(envelope_for_protocol_error(app).is_none());
        assert!(
            envelope_for_protocol_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none()
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // A trusted proxy names the client; proxies in the chain are skipped, a spoofed
        // left-most entry is not believed.
        assert_eq!(
            client_ip(
                ip("10.1.1.1"),
                Some("6.6.6.6, 198.51.100.7, 10.2.2.2"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        assert_eq!(client_ip(ip("::1"), None, &trusted), ip("::1"));
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("garbage"), &trusted),
            ip("10.1.1.1")
        );
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!(
            "192.168.0.0/16"
                .parse::<IpNet>()
                .unwrap()
                .contains(ip("::ffff:192.168.3.4"))
        );
    }
}
