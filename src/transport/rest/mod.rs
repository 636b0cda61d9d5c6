//! The JSON REST surfaces, each in its folder and each transcoded onto the gRPC services:
//! RK Connect (`rk`), the SAK self-hosted API (`sak`), media downloads (`media`); plus health,
//! readiness, metrics and the OpenAPI document. Each surface's `routes()` registers a handler
//! together with its OpenAPI operation.
//!
//! Shared by every surface: the credential extractors (`auth`), the in-process gRPC call
//! (`call`), the RK/SAK envelope (`envelope`), body and parameter decoding (`extract`, `form`)
//! and the per-address limits (`ratelimit`).

pub mod auth;
pub mod broadcasts;
pub mod call;
pub mod cluster;
pub mod envelope;
pub mod extract;
pub mod form;
pub mod media;
pub mod numbers;
pub mod openapi;
pub mod qontak;
pub mod ratelimit;
pub mod rk;
pub mod sak;
pub mod send_policy;
pub mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::domain::Gateway;
use crate::domain::messaging::rfc3339;
use crate::transport::error::Refusal;
use auth::MetricsReader;
use envelope::ApiError;

/// Largest accepted request body: a 10 MiB file plus multipart overhead and form fields.
pub const MAX_BODY_BYTES: usize = 11 * 1024 * 1024;

/// Every REST surface, and the OpenAPI document their handlers make.
pub fn surfaces(gw: &Gateway) -> (Router<Gateway>, utoipa::openapi::OpenApi) {
    let limits = sak::Limits::from_env(gw);
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(rk::routes())
        .merge(sak::routes(&limits))
        .merge(sak::limited(media::routes(), &limits.general))
        .merge(sak::limited(cluster::routes(), &limits.general))
        .merge(sak::limited(broadcasts::routes(), &limits.general))
        .merge(sak::limited(numbers::routes(), &limits.general))
        .merge(sak::limited(send_policy::routes(), &limits.general))
        .merge(qontak::routes())
        .split_for_parts()
}

pub fn router(gw: Gateway) -> Router {
    let (api, doc) = surfaces(&gw);
    let doc = Arc::new(doc);
    let mut router = api
        .route(
            "/api/v1/openapi.json",
            get(move || openapi::serve(doc.clone())),
        )
        .route("/health", get(health))
        .route("/ready", get(ready));
    // With a listener of its own, `/metrics` is not on the API port at all.
    if gw.settings().http.metrics_listen.is_none() {
        router = router.route("/metrics", get(metrics_endpoint));
    }
    router
        .method_not_allowed_fallback(|| async { ApiError::from(Refusal::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(gw)
}

/// A proto timestamp as the REST surfaces write times (RFC 3339 with offset), if set.
pub fn rfc3339_opt(t: Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref()
        .map(|t| rfc3339(crate::transport::grpc::convert::millis(t)))
}

/// As [`rfc3339_opt`], for a time that is always set (unset is empty).
pub fn rfc3339_of(t: Option<prost_types::Timestamp>) -> String {
    rfc3339_opt(t).unwrap_or_default()
}

/// Up to this declared size an oversized body is read and discarded before the `413`;
/// beyond it the answer is immediate and the connection is dropped.
const DRAIN_MAX_BYTES: u64 = 32 * 1024 * 1024;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A body declared over [`MAX_BODY_BYTES`] gets `413 PAYLOAD_TOO_LARGE` without reaching a
/// handler. Answering while the client is still sending makes it see a reset connection
/// instead of the answer, so a moderately oversized body is drained first (bounded in size
/// and time), as web servers do with a lingering close.
async fn refuse_oversized(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures::StreamExt;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY_BYTES as u64 => {
            if n <= DRAIN_MAX_BYTES {
                let mut body = req.into_body().into_data_stream();
                let drain = async { while let Some(Ok(_)) = body.next().await {} };
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
            }
            ApiError::from(Refusal::PayloadTooLarge).into_response()
        }
        _ => next.run(req).await,
    }
}

/// `/metrics`, behind the operator's token when one is set.
pub async fn metrics_endpoint(_: MetricsReader) -> Response {
    crate::transport::metrics::render().await
}

/// Liveness: the process answers.
async fn health(State(gw): State<Gateway>) -> Response {
    axum::Json(serde_json::json!({"status": "ok", "server_id": gw.node_id()})).into_response()
}

/// Readiness: the gateway can serve (see [`Gateway::ready`]).
async fn ready(State(gw): State<Gateway>) -> Response {
    match gw.ready().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready", "server_id": gw.node_id()}))
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}
