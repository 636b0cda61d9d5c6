//! The Qontak-compatible surface under `/qontak/chat/v1`, for clients written against
//! Mekari's Qontak Omnichannel API (its SDK, its examples in eleven languages): the same paths,
//! fields and status codes, transcoded onto the native gRPC methods. It answers Qontak's own
//! envelopes: `{"status":"success","data":…,"meta":{"pagination":…}}` and
//! `{"status":"error","error":{"code":<HTTP status>,"messages":[…]}}` (plus `name`, wagate's
//! stable code). Every request is signed with the Mekari `Authorization: hmac …` scheme
//! ([`Mekari`]): client id = the project's API key, secret = its API secret.

pub mod broadcasts;
pub mod contacts;
pub mod files;
pub mod integrations;
pub mod numbers;
pub mod templates;

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::SecurityRequirement;
use utoipa_axum::router::OpenApiRouter;

use super::auth::{Scheme, header_str};
use crate::domain::Gateway;
use crate::domain::auth::QontakHead;
use crate::domain::principal::Principal;
use crate::error::{Error, Failure, Kind};
use crate::transport::error::Refusal;
use crate::transport::limits::read_body;

/// Where the surface lives (Mekari's `https://api.mekari.com/qontak/chat/v1`).
pub const BASE: &str = "/qontak/chat/v1";

/// Largest JSON body a Qontak call takes.
pub const MAX_JSON_BYTES: usize = 512 * 1024;
/// A GET carries no body of use.
pub const MAX_GET_BYTES: usize = 64 * 1024;

/// Rows a Qontak list answers at most per page.
pub const MAX_LIMIT: i64 = 100;

/// The surface's routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .merge(integrations::routes())
        .merge(templates::routes())
        .merge(contacts::routes())
        .merge(broadcasts::routes())
        .merge(files::routes())
        .merge(numbers::routes())
}

/// An error as Qontak answers it.
#[derive(Debug)]
pub struct QontakError {
    kind: Kind,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

#[derive(Serialize, ToSchema)]
pub struct QontakErrorDetail {
    /// The HTTP status.
    #[schema(example = 422)]
    code: u16,
    /// wagate's stable error code (the README's table).
    #[schema(example = "TEMPLATE_VARIABLES_MISMATCH")]
    name: String,
    #[schema(example = json!(["Message Template has 4 variable, please adjust your payload."]))]
    messages: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct QontakErrorBody {
    /// Always "error".
    #[schema(example = "error")]
    status: String,
    error: QontakErrorDetail,
}

impl QontakError {
    fn of(f: &dyn Failure) -> Self {
        QontakError {
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
        QontakError::of(f)
    }
}

impl std::fmt::Display for QontakError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure for QontakError {
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

impl From<Error> for QontakError {
    fn from(e: Error) -> Self {
        QontakError::logged(&e)
    }
}

impl From<Refusal> for QontakError {
    fn from(r: Refusal) -> Self {
        QontakError::logged(&r)
    }
}

impl From<super::envelope::ApiError> for QontakError {
    fn from(e: super::envelope::ApiError) -> Self {
        QontakError::of(&e)
    }
}

impl From<tonic::Status> for QontakError {
    fn from(s: tonic::Status) -> Self {
        QontakError::of(&super::envelope::ApiError::from(s))
    }
}

impl IntoResponse for QontakError {
    fn into_response(self) -> Response {
        let (status, headers) = super::envelope::answer(&self);
        let body = QontakErrorBody {
            status: "error".into(),
            error: QontakErrorDetail {
                code: status.as_u16(),
                name: self.code.to_owned(),
                messages: vec![self.message],
            },
        };
        (status, headers, Json(body)).into_response()
    }
}

pub type QontakResult = Result<Response, QontakError>;

/// `{"status":"success","data":…}`.
#[derive(Serialize, ToSchema)]
pub struct Ok<T> {
    #[schema(example = "success")]
    status: String,
    data: T,
}

pub fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (
        status,
        Json(Ok {
            status: "success".into(),
            data,
        }),
    )
        .into_response()
}

#[derive(Serialize, ToSchema, Default)]
pub struct Cursor {
    next: Option<String>,
    prev: Option<String>,
    pit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Pagination {
    cursor: Cursor,
    /// The page, from 1.
    offset: i64,
    limit: i64,
    total: i64,
    target_offset: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ListMeta {
    pagination: Pagination,
}

/// `{"status":"success","data":[…],"meta":{"pagination":…}}`.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    #[schema(example = "success")]
    status: String,
    data: Vec<T>,
    meta: ListMeta,
}

/// Qontak's paging: `offset` is the page number from 1 (`0` is read as 1), `limit` its size
/// (default 10, at most [`MAX_LIMIT`]).
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub page: i64,
    pub limit: i64,
}

impl Paging {
    pub fn new(offset: Option<&str>, limit: Option<i64>) -> Result<Self, Error> {
        let page = match offset.map(str::trim).filter(|s| !s.is_empty()) {
            None => 1,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| Error::InvalidRequest("offset must be a page number".into()))?
                .max(1),
        };
        Ok(Paging {
            page,
            limit: limit.unwrap_or(10).clamp(1, MAX_LIMIT),
        })
    }

    /// Rows before this page.
    pub fn skip(&self) -> i64 {
        (self.page - 1).saturating_mul(self.limit)
    }
}

pub fn page<T: Serialize>(data: Vec<T>, paging: Paging, total: i64) -> Response {
    let next = (paging.skip() + (data.len() as i64) < total).then(|| (paging.page + 1).to_string());
    let prev = (paging.page > 1).then(|| (paging.page - 1).to_string());
    let body = Page {
        status: "success".into(),
        data,
        meta: ListMeta {
            pagination: Pagination {
                cursor: Cursor {
                    next,
                    prev,
                    pit: None,
                },
                offset: paging.page,
                limit: paging.limit,
                total,
                target_offset: 0,
            },
        },
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// A request signed with Mekari's scheme: `Authorization: hmac username="<api key>",
/// algorithm="hmac-sha256", headers="date request-line", signature="…"` and a `Date`
/// header. The request line is checked as sent and with its query form-decoded (what
/// Mekari's SDK signs); a `Digest`, when listed, must match the body, but a body need not be
/// signed, since no Qontak client signs one. The body (at most `LIMIT` bytes) is handed over.
pub struct Mekari<const LIMIT: usize> {
    pub principal: Principal,
    pub body: Bytes,
}

/// The signature's first half, from the request head alone.
async fn begin(
    gw: &Gateway,
    parts: &Parts,
) -> Result<crate::domain::auth::Unverified, QontakError> {
    let headers = &parts.headers;
    let auth = header_str(headers, header::AUTHORIZATION.as_str())
        .filter(|a| a.len() > 5 && a[..5].eq_ignore_ascii_case("hmac "))
        .ok_or(Error::InvalidAuthorizationHeader(
            "send Authorization: hmac username=\"…\", algorithm=\"hmac-sha256\", headers=\"date request-line\", signature=\"…\"",
        ))?;
    Ok(gw
        .begin_qontak(QontakHead {
            authorization: auth,
            date: header_str(headers, header::DATE.as_str()),
            digest: header_str(headers, "digest"),
            method: parts.method.as_str(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
            unsigned_body: true,
        })
        .await?)
}

impl<const LIMIT: usize> FromRequest<Gateway> for Mekari<LIMIT> {
    type Rejection = QontakError;

    async fn from_request(req: Request, gw: &Gateway) -> Result<Self, QontakError> {
        let (parts, body) = req.into_parts();
        let pending = begin(gw, &parts).await?;
        let body = read_body(gw, body, LIMIT).await?;
        let caller = pending.verify(gw, &[&body]).await?;
        Result::Ok(Mekari {
            principal: Principal::Project(caller),
            body,
        })
    }
}

/// [`Mekari`] from the head alone, for an upload streamed after it (a listed `Digest`
/// cannot be checked before the body is read, so an upload signs the date and request line).
pub struct MekariHead(pub Principal);

impl FromRequestParts<Gateway> for MekariHead {
    type Rejection = QontakError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, QontakError> {
        let pending = begin(gw, parts).await?;
        let caller = pending.verify(gw, &[]).await?;
        Result::Ok(MekariHead(Principal::Project(caller)))
    }
}

impl Scheme for MekariHead {
    fn declare(op: &mut Operation) {
        Mekari::<0>::declare(op);
    }
}

impl<const LIMIT: usize> Scheme for Mekari<LIMIT> {
    fn declare(op: &mut Operation) {
        op.security
            .get_or_insert_with(Vec::new)
            .push(SecurityRequirement::new("mekariHmac", Vec::<String>::new()));
    }
}

/// The JSON object of a signed body.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, QontakError> {
    Ok(super::extract::json_object(body)?)
}

/// A path parameter, its rejection in the Qontak envelope.
pub struct QPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QPath<T> {
    type Rejection = QontakError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, QontakError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Result::Ok(p) => Result::Ok(QPath(p.0)),
            Err(e) => Err(Refusal::InvalidParameter(e.body_text()).into()),
        }
    }
}

/// The query string, its rejection in the Qontak envelope. Brackets arrays (`k[]=v`) are
/// read as repeated keys.
pub struct QQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QQuery<T> {
    type Rejection = QontakError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, QontakError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Result::Ok(q) => Result::Ok(QQuery(q.0)),
            Err(e) => Err(Refusal::InvalidParameter(e.body_text()).into()),
        }
    }
}

/// A time as Qontak writes it: RFC 3339 in UTC with milliseconds (`2024-01-16T03:35:55.634Z`).
pub fn qontak_time(t: Option<prost_types::Timestamp>) -> Option<String> {
    let ms = crate::transport::grpc::convert::millis(&t?);
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}
