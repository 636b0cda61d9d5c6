//! Reads the credentials of a REST request and hands them to the service layer.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri, header};

use crate::domain::Gateway;
use crate::domain::auth::{Caller, QontakHead, RkHeaders};
use crate::error::{Error, Result};
use crate::transport::limits::read_body;

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A header that must be text when present: invalid UTF-8 is an error naming the header,
/// not a missing header.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| Error::InvalidRequest(format!("the {name} header must be ASCII text"))),
    }
}

/// A signed request: the key and timestamp are checked from the head, then the body (at most
/// `limit` bytes) is read and the signature verified over it. `Authorization: hmac …`
/// selects the Mekari/Qontak scheme; anything else is RK signing.
pub async fn signed(
    gw: &Gateway,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Caller, Bytes)> {
    let pending = match header_str(headers, header::AUTHORIZATION.as_str()) {
        Some(auth) if auth.len() > 5 && auth[..5].eq_ignore_ascii_case("hmac ") => {
            gw.begin_qontak(QontakHead {
                authorization: auth,
                date: header_str(headers, header::DATE.as_str()),
                digest: header_str(headers, "digest"),
                method: method.as_str(),
                path_and_query: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            })
            .await?
        }
        _ => {
            gw.begin_rk(RkHeaders {
                api_key: header_str(headers, "x-api-key"),
                timestamp: header_str(headers, "x-timestamp"),
                signature: header_str(headers, "x-signature"),
            })
            .await?
        }
    };
    let body = read_body(gw, body, limit).await?;
    let caller = pending.verify(gw, &[&body]).await?;
    Ok((caller, body))
}
