//! The RK Connect / SAK response envelope, shared by both surfaces:
//! `{"success":true,"data":…,"meta":{"server_id":…}}` and
//! `{"success":false,"message":…,"code":…}`. A surface with another documented envelope
//! (the coming Qontak one) writes its own body from the same [`Failure`] and [`answer`].

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, Failure, Kind, retry_secs};
use crate::transport::error::Refusal;

#[derive(Debug, Serialize, ToSchema)]
pub struct Meta {
    /// The node that answered (`--node-id`).
    pub server_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Success<T> {
    pub success: bool,
    pub data: T,
    pub meta: Meta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    pub message: String,
    /// Stable machine-readable code (see the README's error table).
    pub code: String,
}

pub fn success<T: Serialize>(status: StatusCode, server_id: &str, data: T) -> Response {
    let body = Success {
        success: true,
        data,
        meta: Meta {
            server_id: server_id.to_owned(),
        },
    };
    (status, Json(body)).into_response()
}

/// A failure as every REST surface answers it, whatever its envelope: the status from its
/// kind, and the headers that go with it.
pub fn answer(f: &dyn Failure) -> (StatusCode, HeaderMap) {
    let kind = f.kind();
    let status =
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    if let Some(after) = f.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(after)));
    }
    // A body too large (or too slow) is answered before it was read, so the connection
    // cannot carry another request: say so, or a keep-alive client reuses it and sees it cut.
    if matches!(kind, Kind::TooLarge | Kind::Timeout) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    (status, headers)
}

/// A failure answered in the RK/SAK envelope. Built from the failure itself (logged when it is
/// ours), or from the status of a gRPC method called in process, whose domain error it
/// carries.
#[derive(Debug)]
pub struct ApiError {
    kind: Kind,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn of(f: &dyn Failure) -> Self {
        ApiError {
            kind: f.kind(),
            code: f.code(),
            message: f.public_message(),
            retry_after: f.retry_after(),
        }
    }

    fn logged(f: &dyn Failure) -> Self {
        if f.kind().is_server_side() {
            tracing::error!(code = f.code(), error = %f, "request failed");
        }
        ApiError::of(f)
    }

    /// The stable code (for tests and logs).
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure for ApiError {
    fn code(&self) -> &'static str {
        self.code
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn public_message(&self) -> String {
        self.message.clone()
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::logged(&e)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::logged(&r)
    }
}

impl From<tonic::Status> for ApiError {
    /// The method already logged a failure of ours when it made the status.
    fn from(s: tonic::Status) -> Self {
        match crate::transport::grpc::status::domain_error(&s) {
            Some(e) => ApiError::of(e),
            // Every failure a method answers carries its domain error; anything else is a bug.
            None => ApiError::logged(&Error::Internal(format!("in-process call: {s}"))),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, headers) = answer(&self);
        let body = ErrorBody {
            success: false,
            message: self.message,
            code: self.code.to_owned(),
        };
        (status, headers, Json(body)).into_response()
    }
}

pub type ApiResult = Result<Response, ApiError>;
