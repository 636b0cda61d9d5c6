//! Webhook delivery: the outbox written with each event (see `storage::events`) is drained
//! by the [`dispatcher`], which signs each request both the SAK way and the Standard Webhooks
//! way ([`signing`]) and sends it through a client that refuses private addresses ([`http`]).
//!
//! Guarantees: at least once (receivers de-duplicate on `webhook-id`, the event id); per
//! webhook and session ("lane"), events are delivered in the order they were recorded, one at
//! a time — a delivery waiting for its retry holds back the later ones of its lane until it
//! succeeds or goes dead; lanes proceed independently of each other.

pub mod dispatcher;
pub mod http;
pub mod signing;

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};

/// Tunables of webhook delivery (flags and environment variables in `config`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Allow receivers on loopback, private and link-local addresses (tests, internal hooks).
    pub allow_private: bool,
    /// Per request: connect, send and receive the response head.
    pub timeout: Duration,
    /// Lanes of one webhook delivered at once by this node.
    pub per_webhook_concurrency: usize,
    /// Lanes delivered at once by this node, all webhooks together.
    pub max_in_flight: usize,
    /// First retry delay; later ones grow from it (×6, ×24, ×120 … up to ×5760).
    pub retry_base: Duration,
    /// A delivery still failing this long after its event goes dead.
    pub retry_horizon: Duration,
    /// After a rotation, how long the previous secret still signs.
    pub secret_overlap: Duration,
    /// How long events (and their finished deliveries) are kept.
    pub retention: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_private: false,
            timeout: Duration::from_secs(10),
            per_webhook_concurrency: 16,
            max_in_flight: 128,
            retry_base: Duration::from_secs(5),
            retry_horizon: Duration::from_secs(24 * 3600),
            secret_overlap: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Multiples of `retry_base` for attempts 1, 2, 3 …; the last repeats until the horizon.
/// With the default 5 s: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h.
const RETRY_STEPS: [u32; 9] = [1, 6, 24, 120, 360, 720, 1440, 2880, 5760];

/// Delay before the next attempt after `attempts` failed ones, with ±20 % jitter so a
/// receiver coming back is not hit by every lane at the same instant.
pub fn retry_delay(base: Duration, attempts: i32) -> Duration {
    let step = RETRY_STEPS[(attempts.max(1) as usize - 1).min(RETRY_STEPS.len() - 1)];
    let d = base.saturating_mul(step);
    let r = f64::from(u16::from_le_bytes(crate::crypto::random_bytes::<2>())) / 65535.0;
    d.mul_f64(0.8 + 0.4 * r)
}

/// Most URL any receiver needs.
pub const MAX_URL_LEN: usize = 2048;

/// Checks a receiver URL at registration: http(s), a host, no credentials, and — unless
/// private receivers are allowed — no literal private address or `localhost`. Host names are
/// checked again on every connection, after resolution (see [`http`]).
pub fn validate_url(raw: &str, allow_private: bool) -> Result<String> {
    let bad = |why: &str| Error::InvalidWebhookUrl(why.to_owned());
    if raw.len() > MAX_URL_LEN {
        return Err(bad("longer than 2048 characters"));
    }
    let url = reqwest::Url::parse(raw.trim()).map_err(|_| bad("not an absolute URL"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(bad("only http and https are allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not allowed"));
    }
    let host = url.host().ok_or_else(|| bad("no host"))?;
    if !allow_private {
        let private = match host {
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == "localhost" || d.ends_with(".localhost")
            }
            url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
        };
        if private {
            return Err(bad(
                "receivers on loopback or private addresses are refused (WAGATE_WEBHOOK_ALLOW_PRIVATE)",
            ));
        }
    }
    Ok(url.to_string())
}

/// Whether an address is on the public internet (not loopback, private, link-local, CGNAT,
/// multicast, unspecified or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// A new webhook secret: `whsec_` and 32 random bytes in base64 (the Standard Webhooks form).
pub fn new_secret() -> String {
    format!(
        "whsec_{}",
        crate::crypto::base64_encode(&crate::crypto::random_bytes::<32>())
    )
}

/// Normalises an event filter: names checked, de-duplicated; empty means every event.
pub fn parse_filter(events: &[String]) -> Result<String> {
    let mut out: Vec<&str> = Vec::new();
    let mut all = false;
    for e in events {
        let e = e.trim();
        if e == "*" {
            // Every name is still checked: a typo beside `*` is a mistake worth reporting.
            all = true;
            continue;
        }
        if !crate::events::KINDS.contains(&e) {
            return Err(Error::InvalidRequest(format!(
                "unknown event '{e}': use {} or *",
                crate::events::KINDS.join(", ")
            )));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if all || out.is_empty() {
        return Ok("*".into());
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_receivers_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://192.168.0.10:8080/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:3000/",
            "http://100.64.0.1/",
        ] {
            assert!(validate_url(url, false).is_err(), "{url}");
            assert!(validate_url(url, true).is_ok(), "{url}");
        }
        assert!(validate_url("https://example.com/hook", false).is_ok());
        assert!(validate_url("ftp://example.com/", true).is_err());
        assert!(validate_url("https://user:pw@example.com/", true).is_err());
        assert!(validate_url("not a url", true).is_err());
    }

    #[test]
    fn retry_schedule_grows_and_is_jittered() {
        let base = Duration::from_secs(5);
        let first = retry_delay(base, 1);
        assert!(first >= Duration::from_secs(4) && first <= Duration::from_secs(6));
        let later = retry_delay(base, 4);
        assert!(later >= Duration::from_secs(480) && later <= Duration::from_secs(720));
        let last = retry_delay(base, 50);
        assert!(last <= Duration::from_secs(5 * 5760 * 12 / 10));
    }

    #[test]
    fn filters() {
        assert_eq!(parse_filter(&[]).unwrap(), "*");
        assert_eq!(
            parse_filter(&["message.received".into(), "message.received".into()]).unwrap(),
            "message.received"
        );
        assert!(parse_filter(&["message.sent".into()]).is_err());
        assert_eq!(
            parse_filter(&["*".into(), "session.status".into()]).unwrap(),
            "*"
        );
        assert!(
            parse_filter(&["*".into(), "message.sent".into()]).is_err(),
            "a typo beside * is reported"
        );
    }
}
