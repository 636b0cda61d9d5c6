//! The one mapping of [`Error`] to a gRPC status. The stable code travels in the
//! `x-error-code` metadata, so gRPC clients branch on the same codes as REST clients.

use tonic::{Code, Status};

use crate::error::Error;

pub fn grpc_code(e: &Error) -> Code {
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
        | Error::InvalidCredentials => Code::Unauthenticated,
        Error::SessionIdRequired => Code::InvalidArgument,
        Error::Forbidden(_) => Code::PermissionDenied,
        Error::RequestTimeout(_) => Code::DeadlineExceeded,
        Error::SessionLimitReached | Error::TooManyRequests { .. } => Code::ResourceExhausted,
        Error::EmailTaken => Code::AlreadyExists,
        Error::InvalidRequest(_)
        | Error::InvalidJson(_)
        | Error::UnsupportedContentType
        | Error::MissingDeviceCode
        | Error::InvalidRecipient
        | Error::InvalidMessageType
        | Error::MessageRequired
        | Error::MessageTooLong(_)
        | Error::MediaRequired
        | Error::MediaTooLarge(_)
        | Error::UnsupportedMediaType(_)
        | Error::InvalidPayload(_)
        | Error::InvalidPhoneNumber
        | Error::InvalidWebhookUrl(_)
        | Error::PayloadTooLarge => Code::InvalidArgument,
        Error::IdempotencyConflict | Error::DeviceCodeTaken => Code::AlreadyExists,
        Error::DeviceNotFound
        | Error::SessionNotFound
        | Error::MessageNotFound
        | Error::WebhookNotFound
        | Error::DeliveryNotFound
        | Error::MediaNotFound
        | Error::MediaExpired
        | Error::EventNotFound
        | Error::ProjectNotFound
        | Error::RouteNotFound => Code::NotFound,
        Error::MethodNotAllowed => Code::Unimplemented,
        Error::RateLimited { .. } | Error::QuotaExceeded => Code::ResourceExhausted,
        Error::Overloaded | Error::Unavailable(_) | Error::WhatsAppUnavailable(_) => {
            Code::Unavailable
        }
        Error::Internal(_) => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = grpc_code(&e);
        if code == Code::Internal || code == Code::Unavailable {
            tracing::error!(code = e.code(), error = %e, "grpc call failed");
        }
        let mut status = Status::new(code, e.public_message());
        let md = status.metadata_mut();
        md.insert("x-error-code", e.code().parse().expect("codes are ASCII"));
        if let Error::RateLimited { retry_after, .. } = &e {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            md.insert("retry-after", secs.to_string().parse().expect("digits"));
        }
        status
    }
}
