//! Request decoding with the documented error envelope: `Path` and `Query` as axum's, except
//! that a malformed URL is a `400 VALIDATION_ERROR` rather than axum's plain-text rejection,
//! and JSON bodies that must be objects. Decoding failures are the transport's
//! ([`Refusal`]), not the domain's.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::envelope::ApiError;
use crate::domain::Gateway;
use crate::transport::error::Refusal;
use crate::transport::limits::read_body;

pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(e) => Err(Refusal::InvalidParameter(e.body_text()).into()),
        }
    }
}

pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Query(q.0)),
            Err(e) => Err(Refusal::InvalidParameter(e.body_text()).into()),
        }
    }
}

/// Largest JSON body of the SAK, webhook and account endpoints (a 65,536-character text in
/// UTF-8 with room to spare); media endpoints take [`super::MAX_BODY_BYTES`].
pub const MAX_JSON_BYTES: usize = 512 * 1024;

/// A JSON object body, read after authentication.
pub async fn json<T: DeserializeOwned>(gw: &Gateway, body: Body) -> Result<T, Refusal> {
    json_object(&read_body(gw, body, MAX_JSON_BYTES).await?)
}

/// As [`json`], where an empty body means every field's default.
pub async fn optional_json<T: DeserializeOwned + Default>(
    gw: &Gateway,
    body: Body,
) -> Result<T, Refusal> {
    let bytes = read_body(gw, body, MAX_JSON_BYTES).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    json_object(&bytes)
}

/// Decodes a JSON body that must be an object. serde would also build a struct from an array
/// of its fields in order, which no client means.
pub fn json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    if body.trim_ascii_start().first() == Some(&b'[') {
        return Err(Refusal::InvalidJson(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| Refusal::InvalidJson(e.to_string()))
}

/// A JSON object body (at most [`MAX_JSON_BYTES`]). As the last argument of a handler it is
/// read only after the credential arguments before it were checked.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Gateway> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Gateway) -> Result<Self, ApiError> {
        Ok(Json(json(gw, req.into_body()).await?))
    }
}

/// As [`Json`], where an empty body means every field's default.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<Gateway> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Gateway) -> Result<Self, ApiError> {
        Ok(OptionalJson(optional_json(gw, req.into_body()).await?))
    }
}
