//! The one mapping of a failure to a gRPC status: the code from the failure's kind, the stable
//! code in the `x-error-code` metadata (gRPC clients branch on the same codes as REST
//! clients), and when to retry as both `retry-after` metadata and a `google.rpc.RetryInfo`
//! detail. A domain [`Error`] also travels as the status's source, so the REST shim that
//! calls a method in process answers the very same error in its own envelope.

use std::sync::Arc;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, Failure, retry_secs};

/// The status answering `f`.
pub fn status(f: &dyn Failure) -> Status {
    let code = f.kind().grpc_code();
    if f.kind().is_server_side() {
        tracing::error!(code = f.code(), error = %f, "grpc call failed");
    }
    let mut status = match f.retry_after() {
        Some(after) => Status::with_error_details(
            code,
            f.public_message(),
            ErrorDetails::with_retry_info(Some(after)),
        ),
        None => Status::new(code, f.public_message()),
    };
    let md = status.metadata_mut();
    md.insert("x-error-code", f.code().parse().expect("codes are ASCII"));
    if let Some(after) = f.retry_after() {
        md.insert(
            "retry-after",
            retry_secs(after).to_string().parse().expect("digits"),
        );
    }
    status
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let mut s = status(&e);
        s.set_source(Arc::new(e));
        s
    }
}

/// The domain error a status carries, when it came from one.
pub fn domain_error(status: &Status) -> Option<&Error> {
    std::error::Error::source(status).and_then(|e| e.downcast_ref::<Error>())
}
