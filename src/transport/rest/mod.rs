//! The JSON REST surface (`/api/v1`, RK Connect compatible), health, metrics and OpenAPI.

pub mod auth;
pub mod envelope;
pub mod messaging;
pub mod openapi;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::domain::Gateway;
use crate::error::Error;
use envelope::ApiError;

/// Largest accepted request body: a 10 MB file plus multipart overhead and form fields.
pub const MAX_BODY_BYTES: usize = 11 * 1024 * 1024;

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/api/v1/send", post(messaging::send))
        .route("/api/v1/status/{id}", get(messaging::status))
        .route("/api/v1/messages", get(messaging::list))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(crate::transport::metrics::render))
        .method_not_allowed_fallback(|| async { ApiError(Error::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gw)
}

/// Liveness: the process answers.
async fn health(State(gw): State<Gateway>) -> Response {
    axum::Json(serde_json::json!({"status": "ok", "server_id": gw.node_id()})).into_response()
}

/// Readiness: the database answers.
async fn ready(State(gw): State<Gateway>) -> Response {
    match gw.db().run(crate::storage::messages::queued_count).await {
        Ok(_) => axum::Json(serde_json::json!({"status": "ready", "server_id": gw.node_id()}))
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
