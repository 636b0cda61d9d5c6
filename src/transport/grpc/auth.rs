//! Authentication of gRPC and grpc-web calls, in one middleware in front of every service.
//!
//! The signature covers the exact bytes on the wire: `hex(HMAC-SHA256(api_secret,
//! api_key ‖ timestamp ‖ method_path ‖ message_bytes))`, where `method_path` is e.g.
//! `/wagate.v1.MessagingService/SendMessage` and `message_bytes` the serialized request
//! message (the gRPC frame's payload, without its 5-byte prefix). Binding the method path
//! stops a signed request from being replayed against another method.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tonic::Status;

use crate::domain::Gateway;
use crate::domain::auth::{Caller, RkHeaders};
use crate::error::Error;
use crate::transport::limits::read_body;

/// Largest unary request accepted (a 10 MiB media file plus the rest of the message).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 11 * 1024 * 1024;

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

pub async fn authenticate(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    // The key and timestamp first: an unknown key is refused before its body is read.
    let headers = RkHeaders {
        api_key: meta(&parts, "x-api-key"),
        timestamp: meta(&parts, "x-timestamp"),
        signature: meta(&parts, "x-signature"),
    };
    let pending = match gw.begin_rk(headers).await {
        Ok(p) => p,
        Err(e) => return status_response(e.into()),
    };
    let bytes = match read_body(&gw, body, MAX_GRPC_MESSAGE_BYTES + 5).await {
        Ok(b) => b,
        Err(Error::PayloadTooLarge) => {
            return status_response(Status::resource_exhausted("request message too large"));
        }
        Err(e) => return status_response(e.into()),
    };
    let message = match first_message(&bytes) {
        Ok(m) => m,
        Err(s) => return status_response(s),
    };
    let path = parts.uri.path().to_owned();
    match pending.verify(&gw, &[path.as_bytes(), message]).await {
        Ok(caller) => {
            parts.extensions.insert::<Caller>(caller);
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => status_response(e.into()),
    }
}

/// The caller the middleware authenticated.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("not authenticated"))
}
