//! Who is calling: RK request signing (`X-API-KEY`/`X-TIMESTAMP`/`X-SIGNATURE`, also used as
//! gRPC metadata) and the Mekari/Qontak `Authorization: hmac …` scheme. Both resolve an API
//! key to its project and check an HMAC-SHA256 made with the project's API secret, in
//! constant time, with the timestamp inside the configured window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Gateway;
use crate::crypto;
use crate::error::{Error, Result};
use crate::storage::projects::{self, ProjectRow};
use crate::storage::sessions::{self, DeviceRow};
use crate::values::ProjectId;

/// An authenticated project.
#[derive(Clone)]
pub struct Caller {
    pub project: Arc<ProjectAuth>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("project_id", &self.project.row.id)
            .finish()
    }
}

pub struct ProjectAuth {
    pub row: ProjectRow,
    secret: Vec<u8>,
}

impl ProjectAuth {
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// The RK headers (or their gRPC metadata twins) as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct RkHeaders<'a> {
    pub api_key: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// What the Qontak scheme signs besides the body, taken from the HTTP request head.
pub struct QontakHead<'a> {
    pub authorization: &'a str,
    pub date: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// Whether a body may go unsigned (no `digest`): the Qontak surface, whose clients never
    /// sign one (Mekari's SDK and examples sign the date and request line only).
    pub unsigned_body: bool,
}

/// The request targets a client may have signed: as sent, and with its query form-decoded
/// (`+` as a space, then percent-decoded), which is what Mekari's own SDK signs.
fn signed_targets(path_and_query: &str) -> Vec<String> {
    let mut out = vec![path_and_query.to_owned()];
    if let Some((path, query)) = path_and_query.split_once('?') {
        let plus = query.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&plus).decode_utf8_lossy();
        let form = format!("{path}?{decoded}");
        if form != out[0] {
            out.push(form);
        }
    }
    out
}

/// A request whose key is known and whose timestamp is fresh, its signature not yet checked:
/// what is signed (the body) may be read now, and only now.
pub struct Unverified {
    project: Arc<ProjectAuth>,
    /// Unix seconds the request claims.
    issued: i64,
    signature: Vec<u8>,
    scheme: Scheme,
}

enum Scheme {
    /// `api_key ‖ timestamp`, followed by what the transport signs.
    Rk { prefix: Vec<u8> },
    Qontak {
        listed: Vec<String>,
        date: String,
        /// The request line as sent, then as the client may have signed it.
        request_lines: Vec<String>,
        digest: Option<String>,
        unsigned_body: bool,
    },
}

impl Unverified {
    /// Checks the signature over `signed` (RK: the raw body, or gRPC's method path and
    /// message; Qontak: the body, bound through its digest), then the project's replay
    /// guard.
    pub async fn verify(self, gw: &Gateway, signed: &[&[u8]]) -> Result<Caller> {
        let ok = match &self.scheme {
            Scheme::Rk { prefix } => {
                let mut parts: Vec<&[u8]> = Vec::with_capacity(signed.len() + 1);
                parts.push(prefix);
                parts.extend_from_slice(signed);
                crypto::verify_hmac_sha256(&self.project.secret, &parts, &self.signature)
            }
            Scheme::Qontak {
                listed,
                date,
                request_lines,
                digest,
                unsigned_body,
            } => {
                let body = signed.concat();
                let expected = format!("SHA-256={}", crypto::base64_encode(&sha2_digest(&body)));
                let digest_signed = listed.iter().any(|h| h == "digest");
                if !body.is_empty() && !digest_signed && !unsigned_body {
                    return Err(Error::InvalidAuthorizationHeader(
                        "a request with a body must sign its digest (headers=\"date request-line digest\")",
                    ));
                }
                if digest_signed && digest.as_deref().map(str::trim) != Some(expected.as_str()) {
                    return Err(Error::InvalidSignature);
                }
                request_lines.iter().any(|request_line| {
                    let lines: Vec<String> = listed
                        .iter()
                        .map(|h| match h.as_str() {
                            "date" => format!("date: {date}"),
                            "digest" => format!("digest: {}", digest.as_deref().unwrap_or("")),
                            _ => request_line.clone(),
                        })
                        .collect();
                    crypto::verify_hmac_sha256(
                        &self.project.secret,
                        &[lines.join("\n").as_bytes()],
                        &self.signature,
                    )
                })
            }
        };
        if !ok {
            return Err(Error::InvalidSignature);
        }
        if self.project.row.refuse_replays {
            let window = gw.settings().signature_window.as_secs() as i64;
            let (pid, hash) = (
                self.project.row.id.clone(),
                hex::encode(sha2_digest(&self.signature)),
            );
            // Kept until the timestamp it was made with leaves the window.
            let expires = (self.issued + window + 1) * 1000;
            let fresh = gw
                .db()
                .run(move |c| projects::record_signature(c, &pid, &hash, expires))
                .await?;
            if !fresh {
                return Err(Error::SignatureReplayed);
            }
        }
        Ok(Caller {
            project: self.project,
        })
    }
}

/// Short-lived cache of decrypted project credentials and device lookups, so the hot path
/// does not hit the database; entries expire so rotations and suspensions take effect.
pub struct AuthCache {
    ttl: Duration,
    projects: Cached<String, Arc<ProjectAuth>>,
    devices: Cached<(ProjectId, String), Arc<DeviceRow>>,
}

type Cached<K, V> = Mutex<HashMap<K, (V, Instant)>>;

const CACHE_MAX: usize = 10_000;

impl AuthCache {
    pub fn new(ttl: Duration) -> Self {
        AuthCache {
            ttl,
            projects: Mutex::default(),
            devices: Mutex::default(),
        }
    }

    fn get<K: std::hash::Hash + Eq, V: Clone>(&self, map: &Cached<K, V>, k: &K) -> Option<V> {
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(k)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    fn put<K: std::hash::Hash + Eq, V>(&self, map: &Cached<K, V>, k: K, v: V) {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(k, (v, Instant::now()));
    }
}

/// The timestamp as Unix seconds, if it is within `window` of now.
fn check_timestamp(ts: &str, window: Duration, now_secs: i64) -> Result<i64> {
    let ts: i64 = ts
        .trim()
        .parse()
        .map_err(|_| Error::TimestampExpired(window.as_secs()))?;
    if now_secs.abs_diff(ts) > window.as_secs() {
        return Err(Error::TimestampExpired(window.as_secs()));
    }
    Ok(ts)
}

impl Gateway {
    async fn project_for_key(&self, api_key: &str) -> Result<Arc<ProjectAuth>> {
        let hash = crypto::hash_api_key(api_key);
        let cache = &self.inner.auth;
        if let Some(p) = cache.get(&cache.projects, &hash) {
            return Ok(p);
        }
        let h = hash.clone();
        let row = self
            .db()
            .run(move |c| projects::project_by_key_hash(c, &h))
            .await?
            .ok_or(Error::InvalidApiKey)?;
        let secret = self.inner.key.open(&row.api_secret_enc)?;
        let auth = Arc::new(ProjectAuth { row, secret });
        cache.put(&cache.projects, hash, auth.clone());
        Ok(auth)
    }

    /// The project as a caller, for credentials that are not the project's own API key
    /// (a SAK session or user key, a user's token).
    pub async fn caller_for_project(&self, project_id: &ProjectId) -> Result<Caller> {
        super::text::no_nul("project id", project_id)?;
        let pid = project_id.clone();
        let row = self
            .db()
            .run(move |c| projects::project_by_id(c, &pid))
            .await?
            .ok_or(Error::ProjectNotFound)?;
        let secret = self.inner.key.open(&row.api_secret_enc)?;
        Ok(Caller {
            project: Arc::new(ProjectAuth { row, secret }),
        })
    }

    /// RK signing: `hex(HMAC-SHA256(secret, api_key ‖ timestamp ‖ signed…))`, where `signed`
    /// is the raw body for REST and `method path ‖ message bytes` for gRPC.
    pub async fn authenticate_rk(&self, h: RkHeaders<'_>, signed: &[&[u8]]) -> Result<Caller> {
        self.begin_rk(h).await?.verify(self, signed).await
    }

    /// The first half of RK signing, from the headers alone: the key must be known and the
    /// timestamp fresh before anyone's body is read.
    pub async fn begin_rk(&self, h: RkHeaders<'_>) -> Result<Unverified> {
        let api_key = h
            .api_key
            .filter(|k| !k.is_empty())
            .ok_or(Error::MissingApiKey)?;
        let (Some(ts), Some(sig)) = (h.timestamp, h.signature) else {
            return Err(Error::MissingSignatureHeaders(
                "X-TIMESTAMP and X-SIGNATURE",
            ));
        };
        let window = self.settings().signature_window;
        let issued = check_timestamp(ts, window, chrono::Utc::now().timestamp())?;
        let project = self.project_for_key(api_key).await?;
        let signature = hex::decode(sig.trim()).map_err(|_| Error::InvalidSignature)?;
        let prefix = [api_key.as_bytes(), ts.as_bytes()].concat();
        Ok(Unverified {
            project,
            issued,
            signature,
            scheme: Scheme::Rk { prefix },
        })
    }

    /// Mekari/Qontak: `Authorization: hmac username="<api_key>", algorithm="hmac-sha256",
    /// headers="date request-line digest", signature="<base64 HMAC>"` over the listed
    /// headers, one per line (`date: <Date>`, `<METHOD> <path?query> HTTP/1.1`,
    /// `digest: SHA-256=<base64 sha256(body)>`). The request line must be signed, and so must
    /// the digest of any body: a signature over the date alone would open every path.
    pub async fn begin_qontak(&self, r: QontakHead<'_>) -> Result<Unverified> {
        let params = parse_hmac_authorization(r.authorization)?;
        let username = params
            .get("username")
            .ok_or(Error::InvalidAuthorizationHeader("username is missing"))?;
        let algorithm = params
            .get("algorithm")
            .map(String::as_str)
            .unwrap_or("hmac-sha256");
        if !algorithm.eq_ignore_ascii_case("hmac-sha256") {
            return Err(Error::InvalidAuthorizationHeader(
                "only algorithm=\"hmac-sha256\" is supported",
            ));
        }
        let signature = params
            .get("signature")
            .ok_or(Error::InvalidAuthorizationHeader("signature is missing"))?;
        let listed: Vec<String> = params
            .get("headers")
            .map(String::as_str)
            .unwrap_or("date")
            .split_ascii_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        for name in &listed {
            if !matches!(name.as_str(), "date" | "request-line" | "digest") {
                return Err(Error::InvalidAuthorizationHeader(
                    "headers may list only date, request-line and digest",
                ));
            }
        }
        let lists = |n: &str| listed.iter().any(|h| h == n);
        if !lists("date") || !lists("request-line") {
            return Err(Error::InvalidAuthorizationHeader(
                "headers must include date and request-line",
            ));
        }
        let date = r
            .date
            .ok_or(Error::MissingSignatureHeaders("the Date header"))?;
        let window = self.settings().signature_window;
        let when = chrono::DateTime::parse_from_rfc2822(date)
            .map_err(|_| Error::TimestampExpired(window.as_secs()))?;
        let issued = check_timestamp(
            &when.timestamp().to_string(),
            window,
            chrono::Utc::now().timestamp(),
        )?;
        if lists("digest") && r.digest.is_none() {
            return Err(Error::MissingSignatureHeaders("the Digest header"));
        }
        let project = self.project_for_key(username).await?;
        let signature = crypto::base64_decode(signature).ok_or(Error::InvalidSignature)?;
        Ok(Unverified {
            project,
            issued,
            signature,
            scheme: Scheme::Qontak {
                listed,
                date: date.to_owned(),
                request_lines: signed_targets(r.path_and_query)
                    .into_iter()
                    .map(|t| format!("{} {t} HTTP/1.1", r.method))
                    .collect(),
                digest: r.digest.map(str::to_owned),
                unsigned_body: r.unsigned_body,
            },
        })
    }

    /// The caller's device by its code; another project's device is not found.
    pub async fn device_for(&self, caller: &Caller, code: &str) -> Result<Arc<DeviceRow>> {
        super::text::no_nul("device code", code)?;
        let key = (caller.project.row.id.clone(), code.to_owned());
        let cache = &self.inner.auth;
        if let Some(d) = cache.get(&cache.devices, &key) {
            return Ok(d);
        }
        let (pid, c) = key.clone();
        let row = self
            .db()
            .run(move |conn| sessions::device_by_code(conn, &pid, &c))
            .await?
            .ok_or(Error::DeviceNotFound)?;
        let row = Arc::new(row);
        cache.put(&cache.devices, key, row.clone());
        Ok(row)
    }
}

fn sha2_digest(body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(body).to_vec()
}

/// Parses `hmac k="v", k2="v2"` into a map; keys lowercased.
fn parse_hmac_authorization(header: &str) -> Result<HashMap<String, String>> {
    let rest = header
        .trim()
        .strip_prefix("hmac ")
        .or_else(|| header.trim().strip_prefix("HMAC "))
        .ok_or(Error::InvalidAuthorizationHeader(
            "expected the hmac scheme",
        ))?;
    let mut out = HashMap::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or(Error::InvalidAuthorizationHeader(
                "expected key=\"value\" pairs",
            ))?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.insert(k.trim().to_ascii_lowercase(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qontak_authorization() {
        let p = parse_hmac_authorization(
            r#"hmac username="abc", algorithm="hmac-sha256", headers="date request-line", signature="c2ln""#,
        )
        .unwrap();
        assert_eq!(p["username"], "abc");
        assert_eq!(p["headers"], "date request-line");
        assert_eq!(p["signature"], "c2ln");
        assert!(parse_hmac_authorization("Bearer x").is_err());
    }

    #[test]
    fn the_query_is_also_tried_form_decoded() {
        assert_eq!(signed_targets("/a/b"), vec!["/a/b"]);
        assert_eq!(
            signed_targets("/q?query=hello+world&c=MTU5NDY%3D&k[]=a"),
            vec![
                "/q?query=hello+world&c=MTU5NDY%3D&k[]=a",
                "/q?query=hello world&c=MTU5NDY=&k[]=a"
            ]
        );
        assert_eq!(
            signed_targets("/q?query=caf%C3%A9+%26+co%3D1%2F2"),
            vec![
                "/q?query=caf%C3%A9+%26+co%3D1%2F2",
                "/q?query=café & co=1/2"
            ]
        );
    }

    #[test]
    fn timestamp_window() {
        let w = Duration::from_secs(300);
        assert!(check_timestamp("1000", w, 1200).is_ok());
        assert!(check_timestamp("1000", w, 1301).is_err());
        assert!(check_timestamp("abc", w, 1000).is_err());
    }
}
