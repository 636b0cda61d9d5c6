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

use std::net::{IpAddr, Ipv4Addr};
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
/// private receivers are allowed — no literal non-public address or `localhost`, so a mistake
/// is a clear error at once. The guard that holds is at delivery: every connection's address
/// is checked again (see [`http`]), so a receiver stored while private ones were allowed is
/// refused once they are not.
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

/// Whether a receiver may be at this address when private receivers are not allowed: only
/// addresses on the public internet. Refused IPv4: this network (0/8), private (10/8,
/// 172.16/12, 192.168/16), CGNAT (100.64/10), loopback, link-local, IETF protocol assignments
/// (192.0.0/24), documentation, benchmarking (198.18/15), multicast, reserved (240/4) and
/// broadcast. IPv6 must be global unicast (2000::/3), which leaves out loopback, unspecified,
/// unique- and link-local, site-local (fec0::/10), multicast, discard-only (100::/64), the
/// deprecated IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d) forms and
/// local-use NAT64 (64:ff9b:1::/48, it translates into the operator's own networks); inside
/// it, IETF protocol assignments (2001::/23, Teredo among them) and documentation (2001:db8::/32,
/// 3fff::/20) are refused too. The IPv6 forms that carry the IPv4 address the traffic ends up
/// at — IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002:aabb:ccdd::/48) — are
/// judged by that IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            let embedded = |hi: u16, lo: u16| {
                is_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)))
            };
            match v6.segments() {
                [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded(hi, lo),
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
                [0x2002, hi, lo, ..] => embedded(hi, lo),
                [a, ..] if a & 0xe000 != 0x2000 => false,
                [0x2001, b, ..] if b < 0x200 => false,
                [0x2001, 0xdb8, ..] => false,
                [0x3fff, b, ..] if b < 0x1000 => false,
                _ => true,
            }
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(o[0] == 0
        || v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || v4.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 224)
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

    /// Every non-public form is refused, at registration and by the delivery guard (both go
    /// through `is_public`), unless private receivers are allowed.
    #[test]
    fn non_public_addresses_in_any_form_are_refused() {
        for ip in [
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "100::1",
            // IPv4-mapped, judged by the IPv4 address.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            // IPv4-compatible (deprecated): refused whatever it embeds.
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            // IPv4-translated ::ffff:0:a.b.c.d: refused whatever it embeds.
            "::ffff:0:127.0.0.1",
            "::ffff:0:8.8.8.8",
            // NAT64 well-known prefix, judged by the IPv4 address.
            "64:ff9b::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::a9fe:a9fe",
            // Local-use NAT64: translates into the operator's own networks.
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
            // 6to4, judged by the IPv4 address in bits 16..48.
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:c0a8:101::1",
            "2002:a9fe:a9fe::1",
            // Teredo and the rest of the IETF protocol assignments.
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:1::1",
            "2001:1ff::1",
            // Documentation.
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
            // Outside global unicast 2000::/3.
            "4000::1",
            "5f00::1",
            "1234::1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert!(!is_public(addr), "{ip} passed the guard");
            let url = match addr {
                IpAddr::V4(_) => format!("http://{ip}:8080/hook"),
                IpAddr::V6(_) => format!("http://[{ip}]:8080/hook"),
            };
            assert!(validate_url(&url, false).is_err(), "{url}");
            assert!(validate_url(&url, true).is_ok(), "{url}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:200::1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b::8.8.4.4",
            "2002:808:808::1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert!(is_public(addr), "{ip} was refused");
            let url = match addr {
                IpAddr::V4(_) => format!("https://{ip}/hook"),
                IpAddr::V6(_) => format!("https://[{ip}]/hook"),
            };
            assert!(validate_url(&url, false).is_ok(), "{url}");
        }
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
