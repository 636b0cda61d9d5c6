//! The JSON REST surface (`/api/v1`, RK Connect compatible), health, metrics and OpenAPI.

pub mod auth;
pub mod envelope;
pub mod extract;
pub mod form;
pub mod messaging;
pub mod openapi;
pub mod ratelimit;
pub mod sak;
pub mod webhooks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::domain::Gateway;
use crate::error::Error;
use envelope::ApiError;

/// Largest accepted request body: a 10 MiB file plus multipart overhead and form fields.
pub const MAX_BODY_BYTES: usize = 11 * 1024 * 1024;

/// The SAK surface, each group behind its per-IP limit.
fn sak_routes(gw: &Gateway) -> Router<Gateway> {
    use axum::middleware::from_fn_with_state;
    use axum::routing::delete;
    let (general, auth, messaging) =
        ratelimit::IpLimiter::from_env(&gw.settings().http.trusted_proxies);
    let auth_routes = Router::new()
        .route("/api/v1/auth/register", post(sak::register))
        .route("/api/v1/auth/login", post(sak::login))
        .layer(from_fn_with_state(auth, ratelimit::limit));
    let manage = Router::new()
        .route(
            "/api/v1/auth/api-keys",
            post(sak::create_api_key).get(sak::list_api_keys),
        )
        .route("/api/v1/auth/credentials", get(sak::rk_credentials))
        .route(
            "/api/v1/auth/credentials/rotate",
            post(sak::rotate_rk_credentials),
        )
        .route(
            "/api/v1/sessions",
            post(sak::create_session).get(sak::list_sessions),
        )
        .route("/api/v1/sessions/{id}", delete(sak::delete_session))
        .route("/api/v1/sessions/{id}/status", get(sak::session_status))
        .route("/api/v1/sessions/{id}/qr", get(sak::session_qr))
        .route(
            "/api/v1/sessions/{id}/pairing-code",
            post(sak::pairing_code),
        )
        .route("/api/v1/sessions/{id}/logout", post(sak::logout_session))
        .route("/api/v1/sessions/{id}/restart", post(sak::restart_session))
        .route(
            "/api/v1/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/api/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::remove),
        )
        .route(
            "/api/v1/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            post(webhooks::redeliver),
        )
        .route(
            "/api/v1/webhooks/{id}/redeliver-failed",
            post(webhooks::redeliver_failed),
        )
        .route("/api/v1/media/{id}", get(webhooks::media))
        .layer(from_fn_with_state(general, ratelimit::limit));
    let messages = Router::new()
        .route("/api/v1/messages/send", post(sak::send_text))
        .route("/api/v1/messages/send-image", post(sak::send_image))
        .route("/api/v1/messages/send-document", post(sak::send_document))
        .route("/api/v1/messages/send-video", post(sak::send_video))
        .route("/api/v1/messages/send-audio", post(sak::send_audio))
        .route("/api/v1/messages/history", get(sak::history))
        .route("/api/v1/webhooks/test", post(webhooks::test))
        .layer(from_fn_with_state(messaging, ratelimit::limit));
    auth_routes.merge(manage).merge(messages)
}

pub fn router(gw: Gateway) -> Router {
    let mut router = Router::new()
        .merge(sak_routes(&gw))
        .route("/api/v1/send", post(messaging::send))
        .route("/api/v1/status/{id}", get(messaging::status))
        .route("/api/v1/messages", get(messaging::list))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/health", get(health))
        .route("/ready", get(ready));
    // With a listener of its own, `/metrics` is not on the API port at all.
    if gw.settings().http.metrics_listen.is_none() {
        router = router.route("/metrics", get(metrics_endpoint));
    }
    router
        .method_not_allowed_fallback(|| async { ApiError(Error::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(gw)
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
            ApiError(Error::PayloadTooLarge).into_response()
        }
        _ => next.run(req).await,
    }
}

/// `/metrics`, behind `Authorization: Bearer <WAGATE_METRICS_TOKEN>` when a token is set.
pub async fn metrics_endpoint(
    State(gw): State<Gateway>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(token) = &gw.settings().http.metrics_token {
        let given = auth::header_str(&headers, axum::http::header::AUTHORIZATION.as_str())
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared as digests: equal-length, so the time taken says nothing of the token.
        if crate::crypto::sha256_hex(given.as_bytes())
            != crate::crypto::sha256_hex(token.as_bytes())
        {
            return ApiError(Error::InvalidToken).into_response();
        }
    }
    crate::transport::metrics::render().await
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
