//! Authentication of gRPC and grpc-web calls, in one middleware in front of every service. It
//! resolves the caller's [`Principal`] and hands it to the method as a request extension (the
//! REST shim hands over the principal its own schemes resolved the same way).
//!
//! Three credentials are accepted:
//! - RK signing over the exact bytes on the wire: `hex(HMAC-SHA256(api_secret, api_key ‖
//!   timestamp ‖ method_path ‖ message_bytes))`, where `method_path` is e.g.
//!   `/wagate.v1.MessagingService/SendMessage` and `message_bytes` the serialized request
//!   message (the gRPC frame's payload, without its 5-byte prefix). Binding the method path
//!   stops a signed request from being replayed against another method.
//! - The account's JWT as `authorization: Bearer <token>`.
//! - A SAK API key alone in `x-api-key` (no `x-timestamp`, no `x-signature`).
//!
//! Health, reflection, `AccountsService/Register` and `/Login` need none. `ClusterService`
//! takes the operator token only; `wagate.internal.*` (node to node) a node token only.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tonic::Status;

use crate::domain::Gateway;
use crate::domain::auth::RkHeaders;
use crate::domain::principal::Principal;
use crate::error::Error;
use crate::transport::error::Refusal;
use crate::transport::limits::read_body;

/// Largest unary request accepted (a 10 MiB media file plus the rest of the message).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 11 * 1024 * 1024;

/// Methods anyone may call: they are how a credential is obtained.
const OPEN_METHODS: &[&str] = &[
    "/wagate.v1.AccountsService/Register",
    "/wagate.v1.AccountsService/Login",
];

fn status_response(status: Status) -> Response {
    status.into_http::<Body>()
}

/// The payload of the first gRPC frame (`[compressed:u8][len:u32be][message]`).
pub fn first_message(body: &[u8]) -> Result<&[u8], Status> {
    if body.is_empty() {
        return Ok(&[]);
    }
    if body.len() < 5 {
        return Err(Status::invalid_argument("truncated gRPC frame"));
    }
    if body[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.get(5..5 + len)
        .ok_or_else(|| Status::invalid_argument("truncated gRPC frame"))
}

fn meta<'a>(req: &'a axum::http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn bearer(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
}

pub async fn authenticate(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/grpc.health.")
        || path.starts_with("/grpc.reflection.")
        || OPEN_METHODS.contains(&path)
    {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    // Node-to-node calls: a token of a node of this cluster, bound to the method.
    if parts.uri.path().starts_with("/wagate.internal.") {
        let token = meta(&parts, crate::cluster::peers::AUTH_HEADER);
        return match gw.verify_node_token(token, parts.uri.path()) {
            Ok(()) => next.run(Request::from_parts(parts, body)).await,
            Err(e) => status_response(e.into()),
        };
    }
    // The cluster's operator: the operator token only.
    if parts.uri.path().starts_with("/wagate.v1.ClusterService/") {
        let token = meta(&parts, "authorization").and_then(bearer);
        return match gw.operator(token) {
            Ok(op) => {
                parts.extensions.insert(op);
                next.run(Request::from_parts(parts, body)).await
            }
            Err(e) => status_response(e.into()),
        };
    }
    match unsigned_principal(&gw, &parts).await {
        Ok(Some(principal)) => {
            parts.extensions.insert(principal);
            return next.run(Request::from_parts(parts, body)).await;
        }
        Ok(None) => {}
        Err(e) => return status_response(e.into()),
    }
    match signed_principal(&gw, &parts, body).await {
        Ok((principal, bytes)) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(status) => status_response(status),
    }
}

/// A JWT, or a SAK key without signing headers; `None` when the call is to be RK-signed.
async fn unsigned_principal(
    gw: &Gateway,
    parts: &axum::http::request::Parts,
) -> Result<Option<Principal>, Error> {
    if let Some(token) = meta(parts, "authorization").and_then(bearer) {
        return gw.principal_for_token(token).await.map(Some);
    }
    let unsigned = meta(parts, "x-signature").is_none() && meta(parts, "x-timestamp").is_none();
    match meta(parts, "x-api-key") {
        Some(key) if unsigned => match gw.sak_key(key).await {
            Ok(p) => Ok(Some(p)),
            // Not a SAK key: the RK path says which signing headers are missing.
            Err(Error::InvalidApiKey) => Ok(None),
            Err(e) => Err(e),
        },
        _ => Ok(None),
    }
}

/// RK signing: the key and timestamp first (an unknown key is refused before its body is
/// read), then the signature over the method path and the message.
async fn signed_principal(
    gw: &Gateway,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<(Principal, axum::body::Bytes), Status> {
    let headers = RkHeaders {
        api_key: meta(parts, "x-api-key"),
        timestamp: meta(parts, "x-timestamp"),
        signature: meta(parts, "x-signature"),
    };
    let pending = gw.begin_rk(headers).await?;
    let bytes = match read_body(gw, body, MAX_GRPC_MESSAGE_BYTES + 5).await {
        Ok(b) => b,
        Err(Refusal::PayloadTooLarge) => {
            return Err(Status::resource_exhausted("request message too large"));
        }
        Err(e) => return Err(super::status::status(&e)),
    };
    let message = first_message(&bytes)?;
    let caller = pending
        .verify(gw, &[parts.uri.path().as_bytes(), message])
        .await?;
    Ok((Principal::Project(caller), bytes))
}

/// The principal the middleware (or the REST shim) authenticated.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("not authenticated"))
}
