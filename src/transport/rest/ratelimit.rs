//! Per-IP request limits of the SAK surface (a window opens at a client's first request;
//! per node), with the SAK
//! document's environment variables: `RATE_LIMIT_WINDOW_MS` (default 60000) and
//! `RATE_LIMIT_MAX_REQUESTS` (general API, default 100); auth endpoints allow 5 and API-key
//! messaging 1000 per window. The client is the TCP peer; `X-Forwarded-For` is believed only
//! from the configured trusted proxies (`WAGATE_TRUSTED_PROXIES`), or anyone could pick a new
//! address per request.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::envelope::ApiError;
use crate::transport::error::Refusal;
use crate::transport::limits::{IpNet, client_ip};

/// Distinct clients remembered per window before the table is reset (bounds memory).
const MAX_CLIENTS: usize = 100_000;

pub struct IpLimiter {
    window_ms: u64,
    max: u32,
    seen: Mutex<HashMap<IpAddr, (u64, u32)>>,
    /// Peers whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<IpNet>,
}

impl IpLimiter {
    pub fn new(window_ms: u64, max: u32, trusted_proxies: Vec<IpNet>) -> Arc<Self> {
        Arc::new(IpLimiter {
            window_ms: window_ms.max(1),
            max,
            seen: Mutex::default(),
            trusted_proxies,
        })
    }

    /// The three limits, from the environment.
    pub fn from_env(trusted_proxies: &[IpNet]) -> (Arc<Self>, Arc<Self>, Arc<Self>) {
        let num = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let window = num("RATE_LIMIT_WINDOW_MS", 60_000);
        let general = num("RATE_LIMIT_MAX_REQUESTS", 100) as u32;
        let t = || trusted_proxies.to_vec();
        (
            Self::new(window, general, t()),
            Self::new(window, 5, t()),
            Self::new(window, 1000, t()),
        )
    }

    /// `Err(retry_after)` when `ip` is over its limit.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = crate::storage::now_ms() as u64;
        let open = |start: u64| now.saturating_sub(start) < self.window_ms;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_CLIENTS && !seen.contains_key(&ip) {
            seen.retain(|_, (start, _)| open(*start));
            if seen.len() >= MAX_CLIENTS {
                seen.clear();
            }
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if !open(entry.0) {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            return Err(Duration::from_millis(self.window_ms - (now - entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// The peer, or the client a trusted proxy names in `X-Forwarded-For`.
fn request_ip(req: &Request, trusted: &[IpNet]) -> IpAddr {
    let peer = req
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|c| c.remote_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    client_ip(peer, forwarded, trusted)
}

pub async fn limit(State(limiter): State<Arc<IpLimiter>>, req: Request, next: Next) -> Response {
    match limiter.check(request_ip(&req, &limiter.trusted_proxies)) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => {
            ApiError::from(Refusal::TooManyRequests { retry_after }).into_response()
        }
    }
}
