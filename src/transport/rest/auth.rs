//! Reads the credentials of a REST request and hands them to the service layer.

use axum::http::{HeaderMap, Method, Uri, header};

use crate::domain::Gateway;
use crate::domain::auth::{Caller, QontakRequest, RkHeaders};
use crate::error::Result;

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Authorization: hmac …` selects the Mekari/Qontak scheme; anything else is RK signing.
pub async fn authenticate(
    gw: &Gateway,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller> {
    if let Some(auth) = header_str(headers, header::AUTHORIZATION.as_str())
        && auth.len() > 5
        && auth[..5].eq_ignore_ascii_case("hmac ")
    {
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        return gw
            .authenticate_qontak(QontakRequest {
                authorization: auth,
                date: header_str(headers, header::DATE.as_str()),
                digest: header_str(headers, "digest"),
                method: method.as_str(),
                path_and_query,
                body,
            })
            .await;
    }
    let h = RkHeaders {
        api_key: header_str(headers, "x-api-key"),
        timestamp: header_str(headers, "x-timestamp"),
        signature: header_str(headers, "x-signature"),
    };
    gw.authenticate_rk(h, &[body]).await
}
