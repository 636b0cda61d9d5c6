//! Per-IP request limits of the SAK surface (per node), with the SAK document's environment
//! variables: `RATE_LIMIT_WINDOW_MS` (default 60000) and `RATE_LIMIT_MAX_REQUESTS` (general
//! API, default 100); auth endpoints allow 5 and API-key messaging 1000 per window. governor
//! counts (GCRA): a client may spend its whole allowance at once and it refills evenly over
//! the window, one request every window/max, so no client averages more than max per window.
//! The client is the TCP peer; `X-Forwarded-For` is believed only from the configured trusted
//! proxies (`WAGATE_TRUSTED_PROXIES`), or anyone could pick a new address per request.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::envelope::ApiError;
use crate::transport::error::Refusal;
use crate::transport::limits::{IpNet, client_ip};

/// Recent clients remembered before the table is started afresh (bounds memory).
const MAX_CLIENTS: usize = 100_000;
/// Requests between sweeps of forgotten clients: a sweep walks the table once, so this bounds
/// both its cost per request and how far the table grows between sweeps.
const SWEEP_EVERY: u32 = 1024;

type Clients = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>;

pub struct IpLimiter {
    quota: Quota,
    clients: RwLock<Clients>,
    /// Requests seen, to sweep every [`SWEEP_EVERY`].
    checks: AtomicU32,
    /// Peers whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<IpNet>,
}

impl IpLimiter {
    /// `max` requests per `window_ms` for each client (a `max` of 0 is taken as 1).
    pub fn new(window_ms: u64, max: u32, trusted_proxies: Vec<IpNet>) -> Arc<Self> {
        let max = NonZeroU32::new(max).unwrap_or(NonZeroU32::MIN);
        let refill_one =
            (Duration::from_millis(window_ms.max(1)) / max.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(refill_one)
            .expect("the refill period is positive")
            .allow_burst(max);
        Arc::new(IpLimiter {
            quota,
            clients: RwLock::new(RateLimiter::hashmap(quota)),
            checks: AtomicU32::new(0),
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
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        clients
            .check_key(&ip)
            .map_err(|refused| refused.wait_time_from(clients.clock().now()))
    }

    /// Forgets clients whose allowance has refilled (they are as good as new); when
    /// [`MAX_CLIENTS`] recent ones remain, starts afresh, as if every client's window closed.
    fn sweep(&self) {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        clients.retain_recent();
        if clients.len() < MAX_CLIENTS {
            return;
        }
        drop(clients);
        let fresh = RateLimiter::hashmap(self.quota);
        let full = std::mem::replace(
            &mut *self.clients.write().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        drop(full); // outside the lock
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    fn remembered(limiter: &IpLimiter) -> usize {
        limiter.clients.read().unwrap().len()
    }

    #[test]
    fn max_per_window_then_retry_after_for_the_next_request() {
        let limiter = IpLimiter::new(60_000, 3, vec![]);
        for _ in 0..3 {
            assert!(limiter.check(ip(1)).is_ok());
        }
        let retry_after = limiter.check(ip(1)).unwrap_err();
        assert!(
            retry_after <= Duration::from_secs(20) && retry_after > Duration::from_secs(19),
            "one request refills every window/max: {retry_after:?}"
        );
        assert!(limiter.check(ip(2)).is_ok(), "clients are counted apart");
    }

    #[test]
    fn a_refused_client_is_served_after_retry_after() {
        let limiter = IpLimiter::new(300, 2, vec![]);
        assert!(limiter.check(ip(1)).is_ok() && limiter.check(ip(1)).is_ok());
        let retry_after = limiter.check(ip(1)).unwrap_err();
        std::thread::sleep(retry_after);
        assert!(limiter.check(ip(1)).is_ok());
    }

    #[test]
    fn idle_clients_are_forgotten() {
        // One request is forgotten 2 × window/max after it was made.
        let limiter = IpLimiter::new(200, 2, vec![]);
        for n in 0..10 {
            assert!(limiter.check(ip(n)).is_ok());
        }
        assert_eq!(remembered(&limiter), 10);
        std::thread::sleep(Duration::from_millis(300));
        assert!(limiter.check(ip(3)).is_ok());
        limiter.sweep();
        assert_eq!(remembered(&limiter), 1, "only the client seen since");
    }

    #[test]
    fn the_table_of_clients_stays_bounded() {
        let limiter = IpLimiter::new(60_000, 5, vec![]);
        let clients = MAX_CLIENTS as u32 + 2 * SWEEP_EVERY;
        for n in 0..clients {
            assert!(limiter.check(ip(n)).is_ok());
        }
        assert!(
            remembered(&limiter) < 2 * SWEEP_EVERY as usize,
            "started afresh at {MAX_CLIENTS}: {}",
            remembered(&limiter)
        );
    }
}
