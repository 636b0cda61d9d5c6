//! How a REST handler calls the gRPC method it transcodes: in process, with the principal its
//! own credential scheme resolved as a request extension (the gRPC auth middleware hands it
//! over the same way), and header values as the gRPC metadata of the same names.

use tonic::metadata::MetadataValue;

use super::envelope::ApiError;
use crate::domain::principal::Principal;
use crate::error::Error;

/// A gRPC request for `message`, made by `principal` (none for the open methods).
pub fn request<T>(principal: Option<Principal>, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    req
}

/// A gRPC request made by a caller other than a project's (the cluster's operator).
pub fn request_as<X: Clone + Send + Sync + 'static, T>(caller: X, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.extensions_mut().insert(caller);
    req
}

/// `request`, with metadata: the REST headers a method reads as metadata (`x-request-id`).
pub fn request_with<T>(
    principal: Principal,
    message: T,
    metadata: &[(&'static str, Option<&str>)],
) -> Result<tonic::Request<T>, ApiError> {
    let mut req = request(Some(principal), message);
    for (name, value) in metadata {
        if let Some(v) = value {
            let v = MetadataValue::try_from(*v).map_err(|_| {
                Error::InvalidRequest(format!("the {name} header must be ASCII text"))
            })?;
            req.metadata_mut().insert(*name, v);
        }
    }
    Ok(req)
}

/// The method's answer, its failure as the domain error it carries.
pub fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ApiError> {
    r.map(tonic::Response::into_inner).map_err(ApiError::from)
}
