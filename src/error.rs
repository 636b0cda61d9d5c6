//! The one error type of the service layer. Each variant has a stable code (the `code`
//! field of the REST envelope and the `x-error-code` gRPC metadata); the mappings to HTTP
//! and gRPC live in `transport::rest::envelope` and `transport::grpc::status`, each one
//! exhaustive match.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // -- authentication (401)
    #[error("missing X-API-KEY header")]
    MissingApiKey,
    /// Names what is missing for the scheme in use.
    #[error("missing signing headers: {0} required")]
    MissingSignatureHeaders(&'static str),
    #[error("this request signature was already used; sign every request anew")]
    SignatureReplayed,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("unknown API key")]
    InvalidApiKey,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("timestamp is missing, malformed or outside the allowed window of {0} seconds")]
    TimestampExpired(u64),
    #[error("missing token: send Authorization: Bearer <JWT>")]
    NoToken,
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("missing x-api-key header")]
    NoApiKey,
    #[error("x-session-id is required with a user API key")]
    SessionIdRequired,
    #[error("session limit reached for this account")]
    SessionLimitReached,
    #[error("email is already registered")]
    EmailTaken,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("too many requests, retry later")]
    TooManyRequests { retry_after: Duration },
    #[error("malformed Authorization header: {0}")]
    InvalidAuthorizationHeader(&'static str),

    // -- request shape (400 / 413 / 415)
    #[error("{0}")]
    InvalidRequest(String),
    #[error("malformed JSON body: {0}")]
    InvalidJson(String),
    #[error("unsupported content type; use application/json or multipart/form-data")]
    UnsupportedContentType,
    #[error("X-DEVICE-CODE header is required")]
    MissingDeviceCode,
    #[error("invalid recipient: use digits with country code, 8 to 15 digits (e.g. 6281234567890)")]
    InvalidRecipient,
    #[error("invalid type: allowed values are text, image, document, video, audio")]
    InvalidMessageType,
    #[error("message is required when type is text")]
    MessageRequired,
    #[error("message is too long (at most {0} characters)")]
    MessageTooLong(usize),
    #[error("media file is required when type is not text")]
    MediaRequired,
    #[error("media file exceeds the maximum size of {0} bytes")]
    MediaTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("payload must be a JSON object of at most {0} bytes")]
    InvalidPayload(usize),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the request body did not arrive within {0} seconds")]
    RequestTimeout(u64),
    #[error("X-REQUEST-ID was already used for a different request")]
    IdempotencyConflict,

    // -- not found / forbidden
    #[error("device not found in this project")]
    DeviceNotFound,
    #[error("session not found")]
    SessionNotFound,
    #[error("invalid webhook URL: {0}")]
    InvalidWebhookUrl(String),
    #[error("webhook not found")]
    WebhookNotFound,
    #[error("media not found")]
    MediaNotFound,
    #[error("media expired: its retention period is over")]
    MediaExpired,
    #[error("delivery not found")]
    DeliveryNotFound,
    #[error("event not found: the cursor names no event of this project")]
    EventNotFound,
    #[error("invalid phone number: 8 to 15 digits with country code")]
    InvalidPhoneNumber,
    #[error("message not found")]
    MessageNotFound,
    #[error("project not found")]
    ProjectNotFound,
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("device code is already in use")]
    DeviceCodeTaken,

    // -- limits
    #[error("rate limit exceeded: at most {limit} messages per minute")]
    RateLimited { limit: i64, retry_after: Duration },
    #[error("Monthly quota exceeded or account suspended.")]
    QuotaExceeded,

    // -- server side
    #[error("server busy, retry shortly")]
    Overloaded,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The session's WhatsApp connection cannot do it now (not built yet, stopped, or
    /// WhatsApp did not answer); the reason is ours and safe to show.
    #[error("WhatsApp is not reachable for this session: {0}")]
    WhatsAppUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable machine-readable code. Listed in the README; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingApiKey => "MISSING_API_KEY",
            Error::MissingSignatureHeaders(_) => "MISSING_SIGNATURE_HEADERS",
            Error::SignatureReplayed => "SIGNATURE_REPLAYED",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::RequestTimeout(_) => "REQUEST_TIMEOUT",
            Error::InvalidApiKey => "INVALID_API_KEY",
            Error::InvalidSignature => "INVALID_SIGNATURE",
            Error::TimestampExpired(_) => "TIMESTAMP_EXPIRED",
            Error::InvalidAuthorizationHeader(_) => "INVALID_AUTHORIZATION_HEADER",
            Error::NoToken => "NO_TOKEN",
            Error::InvalidToken => "INVALID_TOKEN",
            Error::NoApiKey => "NO_API_KEY",
            Error::SessionIdRequired => "SESSION_ID_REQUIRED",
            Error::SessionLimitReached => "SESSION_LIMIT_REACHED",
            Error::EmailTaken => "EMAIL_TAKEN",
            Error::InvalidCredentials => "INVALID_CREDENTIALS",
            Error::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Error::InvalidRequest(_) => "VALIDATION_ERROR",
            Error::InvalidJson(_) => "INVALID_JSON",
            Error::UnsupportedContentType => "UNSUPPORTED_CONTENT_TYPE",
            Error::MissingDeviceCode => "MISSING_DEVICE_CODE",
            Error::InvalidRecipient => "INVALID_RECIPIENT",
            Error::InvalidMessageType => "INVALID_MESSAGE_TYPE",
            Error::MessageRequired => "MESSAGE_REQUIRED",
            Error::MessageTooLong(_) => "MESSAGE_TOO_LONG",
            Error::MediaRequired => "MEDIA_REQUIRED",
            Error::MediaTooLarge(_) => "MEDIA_TOO_LARGE",
            Error::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Error::InvalidPayload(_) => "INVALID_PAYLOAD",
            Error::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Error::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            Error::DeviceNotFound => "DEVICE_NOT_FOUND",
            Error::SessionNotFound => "SESSION_NOT_FOUND",
            Error::InvalidPhoneNumber => "INVALID_PHONE_NUMBER",
            Error::InvalidWebhookUrl(_) => "INVALID_WEBHOOK_URL",
            Error::WebhookNotFound => "WEBHOOK_NOT_FOUND",
            Error::DeliveryNotFound => "DELIVERY_NOT_FOUND",
            Error::MediaNotFound => "MEDIA_NOT_FOUND",
            Error::MediaExpired => "MEDIA_EXPIRED",
            Error::EventNotFound => "EVENT_NOT_FOUND",
            Error::MessageNotFound => "MESSAGE_NOT_FOUND",
            Error::ProjectNotFound => "PROJECT_NOT_FOUND",
            Error::RouteNotFound => "NOT_FOUND",
            Error::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Error::DeviceCodeTaken => "DEVICE_CODE_TAKEN",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::QuotaExceeded => "QUOTA_EXCEEDED",
            Error::Overloaded => "SERVER_BUSY",
            Error::Unavailable(_) => "SERVICE_UNAVAILABLE",
            Error::WhatsAppUnavailable(_) => "WHATSAPP_UNAVAILABLE",
            Error::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The message a client sees. Internal details stay in the log, never in a response.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_owned(),
            Error::Unavailable(_) => "service temporarily unavailable".to_owned(),
            other => other.to_string(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        Error::Internal(format!("database: {e}"))
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::Unavailable(format!("database pool: {e}"))
    }
}
