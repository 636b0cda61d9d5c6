//! Refusals of the transport itself, before any operation runs: no such route, a body that is
//! not what the endpoint reads, a body too large, too slow or over the server's budget, a
//! client over its per-address limit. They are not the domain's business, so they are not
//! `Error` variants; they implement the same [`Failure`] contract and keep their stable codes.

use std::time::Duration;

use crate::error::{Failure, Kind};

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("malformed JSON body: {0}")]
    InvalidJson(String),
    /// A path or query parameter that does not decode.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("unsupported content type; use application/json or multipart/form-data")]
    UnsupportedContentType,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the request body did not arrive within {0} seconds")]
    RequestTimeout(u64),
    /// The server's budget for request bodies in flight is spent.
    #[error("server busy, retry shortly")]
    Busy,
    /// The per-address limit in front of the SAK endpoints.
    #[error("too many requests, retry later")]
    TooManyRequests { retry_after: Duration },
}

impl Failure for Refusal {
    fn code(&self) -> &'static str {
        match self {
            Refusal::RouteNotFound => "NOT_FOUND",
            Refusal::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Refusal::InvalidJson(_) => "INVALID_JSON",
            Refusal::InvalidParameter(_) => "VALIDATION_ERROR",
            Refusal::UnsupportedContentType => "UNSUPPORTED_CONTENT_TYPE",
            Refusal::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Refusal::RequestTimeout(_) => "REQUEST_TIMEOUT",
            Refusal::Busy => "SERVER_BUSY",
            Refusal::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Refusal::RouteNotFound => Kind::NotFound,
            Refusal::MethodNotAllowed => Kind::Unimplemented,
            Refusal::InvalidJson(_) | Refusal::InvalidParameter(_) => Kind::InvalidArgument,
            Refusal::UnsupportedContentType => Kind::UnsupportedType,
            Refusal::PayloadTooLarge => Kind::TooLarge,
            Refusal::RequestTimeout(_) => Kind::Timeout,
            Refusal::Busy => Kind::Unavailable,
            Refusal::TooManyRequests { .. } => Kind::RateLimited,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::TooManyRequests { retry_after } => Some(*retry_after),
            Refusal::Busy => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}
