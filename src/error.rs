//! The one error type of the service layer.
//!
//! Policy:
//! - Each variant has a stable code (the `code` field of the REST envelopes, the
//!   `x-error-code` gRPC metadata), listed in the README and never renamed.
//! - Each variant has a [`Kind`]; the HTTP status and the gRPC code are derived from the kind
//!   alone ([`Kind::http_status`], [`Kind::grpc_code`]), so both transports always agree.
//! - Whether and when to retry is decided once, in [`Failure::retry_after`]: REST answers it
//!   as `Retry-After`, gRPC as `retry-after` metadata and a `google.rpc.RetryInfo` detail.
//! - Failures of the transport itself (no route, a body that is not JSON, a wrong content
//!   type, a body too large or too slow) are not domain errors: they live in
//!   `transport::error` and implement the same [`Failure`] contract.
//! - Internal details (database messages, I/O errors) go to the log, never to a client.

use std::time::Duration;

/// What kind of failure it is. The transports derive their statuses from this alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or a value is out of range: 400 / `INVALID_ARGUMENT`.
    InvalidArgument,
    /// No valid credential: 401 / `UNAUTHENTICATED`.
    Unauthenticated,
    /// A valid credential that may not do this: 403 / `PERMISSION_DENIED`.
    Forbidden,
    /// 404 / `NOT_FOUND`.
    NotFound,
    /// Existed, and is gone for good (media past its retention): 410 / `NOT_FOUND`.
    Gone,
    /// Clashes with what exists (an email, a device code, an idempotency key reused for
    /// another request): 409 / `ALREADY_EXISTS`.
    Conflict,
    /// Well-formed, but it does not fit what it refers to (a template's variable count):
    /// 422 / `INVALID_ARGUMENT`.
    Unprocessable,
    /// A body or file over its limit: 413 / `INVALID_ARGUMENT`.
    TooLarge,
    /// A content or media type that is not accepted: 415 / `INVALID_ARGUMENT`.
    UnsupportedType,
    /// The request did not arrive in time: 408 / `DEADLINE_EXCEEDED`.
    Timeout,
    /// An allowance is used up until an operator or the calendar changes it (the session cap,
    /// the monthly quota): 403 / `RESOURCE_EXHAUSTED`; retrying soon does not help.
    LimitReached,
    /// Too many requests in a window: 429 / `RESOURCE_EXHAUSTED`, with a time to retry.
    RateLimited,
    /// The server cannot do it now (busy, database unreachable, WhatsApp not reachable):
    /// 503 / `UNAVAILABLE`.
    Unavailable,
    /// A route or method this server does not have: 405 / `UNIMPLEMENTED`.
    Unimplemented,
    /// A bug or an unexpected failure: 500 / `INTERNAL`.
    Internal,
}

impl Kind {
    pub fn http_status(self) -> u16 {
        match self {
            Kind::InvalidArgument => 400,
            Kind::Unauthenticated => 401,
            Kind::Forbidden | Kind::LimitReached => 403,
            Kind::NotFound => 404,
            Kind::Unimplemented => 405,
            Kind::Timeout => 408,
            Kind::Conflict => 409,
            Kind::Gone => 410,
            Kind::TooLarge => 413,
            Kind::UnsupportedType => 415,
            Kind::Unprocessable => 422,
            Kind::RateLimited => 429,
            Kind::Internal => 500,
            Kind::Unavailable => 503,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Kind::InvalidArgument
            | Kind::Unprocessable
            | Kind::TooLarge
            | Kind::UnsupportedType => Code::InvalidArgument,
            Kind::Unauthenticated => Code::Unauthenticated,
            Kind::Forbidden => Code::PermissionDenied,
            Kind::NotFound | Kind::Gone => Code::NotFound,
            Kind::Conflict => Code::AlreadyExists,
            Kind::Timeout => Code::DeadlineExceeded,
            Kind::LimitReached | Kind::RateLimited => Code::ResourceExhausted,
            Kind::Unavailable => Code::Unavailable,
            Kind::Unimplemented => Code::Unimplemented,
            Kind::Internal => Code::Internal,
        }
    }

    /// A failure on our side (logged with its details when answered).
    pub fn is_server_side(self) -> bool {
        matches!(self, Kind::Internal | Kind::Unavailable)
    }
}

/// What a transport needs to answer a failure: implemented by [`Error`] and by the transports'
/// own refusals, so one renderer per transport serves both.
pub trait Failure: std::fmt::Display {
    /// The stable machine-readable code.
    fn code(&self) -> &'static str;
    fn kind(&self) -> Kind;
    /// The message a client sees; internal details stay in the log.
    fn public_message(&self) -> String {
        self.to_string()
    }
    /// When a client should try again, if it should: the one decision behind REST's
    /// `Retry-After` and gRPC's retry info.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// A retry delay as whole seconds, at least one (what `Retry-After` can carry).
pub fn retry_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// How long a client waits before retrying when the server is busy or unavailable.
const BUSY_RETRY: Duration = Duration::from_secs(1);

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
    #[error("malformed Authorization header: {0}")]
    InvalidAuthorizationHeader(&'static str),

    // -- request shape (400 / 413 / 415)
    #[error("{0}")]
    InvalidRequest(String),
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
    #[error("node not found in this cluster")]
    NodeNotFound,
    /// No operator token is configured: the cluster endpoints are off.
    #[error("the cluster endpoints are off: set WAGATE_ADMIN_TOKEN to enable them")]
    OperatorApiDisabled,
    #[error("device code is already in use")]
    DeviceCodeTaken,

    // -- broadcasts
    /// A template that cannot be stored as given (the message says which part).
    #[error("invalid template: {0}")]
    InvalidTemplate(String),
    #[error("template not found")]
    TemplateNotFound,
    #[error("contact list not found")]
    ContactListNotFound,
    #[error("this number is not on the suppression list")]
    SuppressionNotFound,
    #[error("broadcast not found")]
    BroadcastNotFound,
    /// Pause, resume or cancel asked of a broadcast in a state that does not allow it.
    #[error("{0}")]
    BroadcastState(String),
    #[error("a template with this name already exists in this project")]
    TemplateNameTaken,
    /// Qontak's own words for a send whose body parameters do not match the template.
    #[error("Message Template has {0} variable, please adjust your payload.")]
    TemplateVariables(usize),

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
    /// The session moved to another node while this one worked on it (its lease epoch is
    /// gone): the write is refused and this node stops running the session.
    #[error("the session moved to another node; retry")]
    SessionMoved,
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
            Error::InvalidRequest(_) => "VALIDATION_ERROR",
            Error::MissingDeviceCode => "MISSING_DEVICE_CODE",
            Error::InvalidRecipient => "INVALID_RECIPIENT",
            Error::InvalidMessageType => "INVALID_MESSAGE_TYPE",
            Error::MessageRequired => "MESSAGE_REQUIRED",
            Error::MessageTooLong(_) => "MESSAGE_TOO_LONG",
            Error::MediaRequired => "MEDIA_REQUIRED",
            Error::MediaTooLarge(_) => "MEDIA_TOO_LARGE",
            Error::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Error::InvalidPayload(_) => "INVALID_PAYLOAD",
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
            Error::NodeNotFound => "NODE_NOT_FOUND",
            Error::OperatorApiDisabled => "OPERATOR_API_DISABLED",
            Error::DeviceCodeTaken => "DEVICE_CODE_TAKEN",
            Error::InvalidTemplate(_) => "INVALID_TEMPLATE",
            Error::TemplateNotFound => "TEMPLATE_NOT_FOUND",
            Error::ContactListNotFound => "CONTACT_LIST_NOT_FOUND",
            Error::SuppressionNotFound => "SUPPRESSION_NOT_FOUND",
            Error::BroadcastNotFound => "BROADCAST_NOT_FOUND",
            Error::BroadcastState(_) => "BROADCAST_STATE_CONFLICT",
            Error::TemplateNameTaken => "TEMPLATE_NAME_TAKEN",
            Error::TemplateVariables(_) => "TEMPLATE_VARIABLES_MISMATCH",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::QuotaExceeded => "QUOTA_EXCEEDED",
            Error::Overloaded => "SERVER_BUSY",
            Error::Unavailable(_) => "SERVICE_UNAVAILABLE",
            Error::WhatsAppUnavailable(_) => "WHATSAPP_UNAVAILABLE",
            Error::SessionMoved => "SESSION_MOVED",
            Error::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// What kind of failure this is; the statuses of both transports follow from it.
    pub fn kind(&self) -> Kind {
        match self {
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
            | Error::InvalidCredentials => Kind::Unauthenticated,
            Error::Forbidden(_) => Kind::Forbidden,
            Error::SessionIdRequired
            | Error::InvalidRequest(_)
            | Error::MissingDeviceCode
            | Error::InvalidRecipient
            | Error::InvalidMessageType
            | Error::MessageRequired
            | Error::MessageTooLong(_)
            | Error::MediaRequired
            | Error::InvalidPayload(_)
            | Error::InvalidPhoneNumber
            | Error::InvalidWebhookUrl(_)
            | Error::InvalidTemplate(_) => Kind::InvalidArgument,
            Error::TemplateVariables(_) => Kind::Unprocessable,
            Error::MediaTooLarge(_) => Kind::TooLarge,
            Error::UnsupportedMediaType(_) => Kind::UnsupportedType,
            Error::EmailTaken
            | Error::IdempotencyConflict
            | Error::DeviceCodeTaken
            | Error::TemplateNameTaken => Kind::Conflict,
            Error::DeviceNotFound
            | Error::SessionNotFound
            | Error::MessageNotFound
            | Error::WebhookNotFound
            | Error::DeliveryNotFound
            | Error::MediaNotFound
            | Error::EventNotFound
            | Error::ProjectNotFound
            | Error::NodeNotFound
            | Error::OperatorApiDisabled
            | Error::TemplateNotFound
            | Error::ContactListNotFound
            | Error::SuppressionNotFound
            | Error::BroadcastNotFound => Kind::NotFound,
            Error::BroadcastState(_) => Kind::Conflict,
            Error::MediaExpired => Kind::Gone,
            Error::SessionLimitReached | Error::QuotaExceeded => Kind::LimitReached,
            Error::RateLimited { .. } => Kind::RateLimited,
            Error::Overloaded
            | Error::Unavailable(_)
            | Error::WhatsAppUnavailable(_)
            | Error::SessionMoved => Kind::Unavailable,
            Error::Internal(_) => Kind::Internal,
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

impl Failure for Error {
    fn code(&self) -> &'static str {
        Error::code(self)
    }

    fn kind(&self) -> Kind {
        Error::kind(self)
    }

    fn public_message(&self) -> String {
        Error::public_message(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            // Busy, or the database is unreachable: a moment later usually works.
            Error::Overloaded | Error::Unavailable(_) | Error::SessionMoved => Some(BUSY_RETRY),
            _ => None,
        }
    }
}

impl From<diesel::result::Error> for Error {
    /// A lost connection or a transaction that lost a serialization race is the database
    /// being unavailable for this request (retry), not a bug.
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        match &e {
            D::DatabaseError(
                K::ClosedConnection | K::UnableToSendCommand | K::SerializationFailure,
                _,
            )
            | D::BrokenTransactionManager => Error::Unavailable(format!("database: {e}")),
            // SQLite's busy timeout ran out.
            D::DatabaseError(_, info) if info.message().contains("database is locked") => {
                Error::Unavailable(format!("database: {e}"))
            }
            _ => Error::Internal(format!("database: {e}")),
        }
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::Unavailable(format!("database pool: {e}"))
    }
}
