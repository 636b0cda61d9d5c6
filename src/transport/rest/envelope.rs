//! The RK response envelope: `{"success":true,"data":…,"meta":{"server_id":…}}` and
//! `{"success":false,"message":…,"code":…}`, and the one mapping of [`Error`] to HTTP.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

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

/// The HTTP status of every error; exhaustive so a new variant cannot go unmapped.
pub fn http_status(e: &Error) -> StatusCode {
    match e {
        Error::MissingApiKey
        | Error::MissingSignatureHeaders(_)
        | Error::SignatureReplayed
        | Error::InvalidApiKey
        | Error::InvalidSignature
        | Error::TimestampExpired(_)
        | Error::InvalidAuthorizationHeader(_)
        | Error::NoToken
        | Error::InvalidToken
        | Error::NoApiKey
        | Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
        Error::SessionIdRequired => StatusCode::BAD_REQUEST,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        Error::SessionLimitReached => StatusCode::FORBIDDEN,
        Error::EmailTaken => StatusCode::CONFLICT,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::InvalidRequest(_)
        | Error::InvalidJson(_)
        | Error::MissingDeviceCode
        | Error::InvalidRecipient
        | Error::InvalidMessageType
        | Error::MessageRequired
        | Error::MessageTooLong(_)
        | Error::MediaRequired
        | Error::InvalidPayload(_)
        | Error::InvalidPhoneNumber
        | Error::InvalidWebhookUrl(_) => StatusCode::BAD_REQUEST,
        Error::UnsupportedContentType | Error::UnsupportedMediaType(_) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Error::MediaTooLarge(_) | Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Error::IdempotencyConflict | Error::DeviceCodeTaken => StatusCode::CONFLICT,
        Error::DeviceNotFound
        | Error::SessionNotFound
        | Error::MessageNotFound
        | Error::WebhookNotFound
        | Error::DeliveryNotFound
        | Error::MediaNotFound
        | Error::EventNotFound
        | Error::ProjectNotFound
        | Error::RouteNotFound => StatusCode::NOT_FOUND,
        Error::MediaExpired => StatusCode::GONE,
        Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::QuotaExceeded => StatusCode::FORBIDDEN,
        Error::Overloaded | Error::Unavailable(_) | Error::WhatsAppUnavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An [`Error`] answered over REST.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = http_status(&e);
        if status.is_server_error() {
            tracing::error!(code = e.code(), error = %e, "request failed");
        }
        let body = ErrorBody {
            success: false,
            message: e.public_message(),
            code: e.code().to_owned(),
        };
        let mut resp = (status, Json(body)).into_response();
        if let Error::RateLimited { retry_after, .. } | Error::TooManyRequests { retry_after } = &e
        {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(e, Error::Overloaded) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        // A body too large (or too slow) is answered before it was read, so the connection
        // cannot carry another request: say so, or a keep-alive client reuses it and sees it
        // cut.
        if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

pub type ApiResult = Result<Response, ApiError>;
