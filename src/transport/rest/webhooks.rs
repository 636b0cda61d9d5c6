//! Webhook management, the delivery log and replay, and inbound media downloads, in the SAK
//! style (`{success, data}`, camelCase). `POST /webhooks` and `POST /webhooks/test` are the
//! SAK document's forms; the rest transcode `WebhooksService`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::{Path, Query};
use super::extract::{json, optional_json};
use super::sak::{manager, messaging_key, messenger};
use crate::domain::Gateway;
use crate::domain::messaging::rfc3339;
use crate::domain::webhooks::{DeliveryView, WebhookView};
use crate::error::Error;

/// A webhook registration (its secret only in the answer that created or rotated it).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookData {
    webhook_id: String,
    /// Null for a project-wide webhook.
    session_id: Option<String>,
    url: String,
    events: Vec<String>,
    enabled: bool,
    /// Why it was disabled (e.g. the receiver answered 410 Gone).
    disabled_reason: Option<String>,
    created_at: String,
    /// `whsec_…`, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl From<WebhookView> for WebhookData {
    fn from(w: WebhookView) -> Self {
        WebhookData {
            webhook_id: w.id,
            session_id: w.session_id,
            url: w.url,
            events: w.events,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            created_at: rfc3339(w.created_at),
            secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptData {
    /// Null when no HTTP answer came (timeout, refused connection).
    status_code: Option<i32>,
    latency_ms: i64,
    error: Option<String>,
    at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryData {
    delivery_id: String,
    /// Also the `webhook-id` header, stable across retries.
    event_id: String,
    event: String,
    /// pending, succeeded, failed (retrying), dead
    state: String,
    created_at: String,
    attempts: Vec<AttemptData>,
}

impl From<DeliveryView> for DeliveryData {
    fn from(d: DeliveryView) -> Self {
        DeliveryData {
            delivery_id: d.id,
            event_id: d.event_id,
            event: d.event_type,
            state: d.state,
            created_at: rfc3339(d.created_at),
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptData {
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error,
                    at: rfc3339(a.at),
                })
                .collect(),
        }
    }
}

/// The event names a webhook filter takes (documentation only: filters are validated by
/// the service layer).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum EventName {
    #[schema(rename = "message.received")]
    MessageReceived,
    #[schema(rename = "message.status")]
    MessageStatus,
    #[schema(rename = "session.status")]
    SessionStatus,
    /// Every event.
    #[schema(rename = "*")]
    All,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewWebhook {
    /// Omit for a project-wide webhook.
    session_id: Option<String>,
    /// An absolute http(s) URL of a public host (private addresses only when the gateway
    /// allows them).
    #[schema(format = "uri")]
    url: String,
    /// Empty means every event.
    #[serde(default)]
    #[schema(value_type = Vec<EventName>)]
    events: Vec<String>,
}

/// Register a webhook (per session or project-wide); the secret is in this answer only.
#[utoipa::path(
    post, path = "/api/v1/webhooks", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    request_body = NewWebhook,
    responses(
        (status = 201, body = inline(Success<WebhookData>)),
        (status = 400, description = "INVALID_WEBHOOK_URL, INVALID_REQUEST", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn create(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let req: NewWebhook = json(&gw, body).await?;
    let (w, secret) = gw
        .create_webhook(&caller, req.session_id, &req.url, &req.events)
        .await?;
    let data = WebhookData {
        secret: Some(secret),
        ..w.into()
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// Only this session's webhooks.
    session_id: Option<String>,
}

/// The project's webhooks.
#[utoipa::path(
    get, path = "/api/v1/webhooks", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    params(ListParams),
    responses((status = 200, body = inline(Success<Vec<WebhookData>>)), (status = 401, body = ErrorBody))
)]
pub async fn list(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Query(q): Query<ListParams>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let hooks = gw.list_webhooks(&caller, q.session_id).await?;
    let data: Vec<WebhookData> = hooks.into_iter().map(Into::into).collect();
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// One webhook.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses(
        (status = 200, body = inline(Success<WebhookData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "WEBHOOK_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn get(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let w = gw.get_webhook(&caller, &id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), WebhookData::from(w)))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct WebhookChanges {
    #[schema(format = "uri")]
    url: Option<String>,
    #[schema(value_type = Option<Vec<EventName>>)]
    events: Option<Vec<String>>,
    /// `true` re-enables a webhook disabled by a 410.
    enabled: Option<bool>,
}

/// Change a webhook; the next delivery uses the change (no session restart).
#[utoipa::path(
    patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "webhook id")),
    request_body(content = Option<WebhookChanges>, description = "only the fields to change"),
    responses(
        (status = 200, body = inline(Success<WebhookData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn update(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let ch: WebhookChanges = optional_json(&gw, body).await?;
    let w = gw
        .update_webhook(
            &caller,
            &id,
            ch.url.as_deref(),
            ch.events.as_deref(),
            ch.enabled,
        )
        .await?;
    Ok(success(StatusCode::OK, gw.node_id(), WebhookData::from(w)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeleted {
    webhook_id: String,
    deleted: bool,
}

/// Delete a webhook and its pending deliveries.
#[utoipa::path(
    delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses(
        (status = 200, body = inline(Success<WebhookDeleted>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn remove(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    gw.delete_webhook(&caller, &id).await?;
    let data = WebhookDeleted {
        webhook_id: id,
        deleted: true,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// How long the old secret keeps signing too (default 24 h, at most 30 days).
    #[schema(minimum = 0, maximum = 2592000)]
    overlap_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotated {
    webhook_id: String,
    /// The new secret, shown once.
    secret: String,
    previous_secret_expires_at: Option<String>,
}

/// New signing secret; the old one stays valid for the overlap.
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "webhook id")),
    request_body(content = Option<Rotation>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 200, body = inline(Success<SecretRotated>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let r: Rotation = optional_json(&gw, body).await?;
    let overlap = r.overlap_seconds.map(std::time::Duration::from_secs);
    let (secret, expires) = gw.rotate_webhook_secret(&caller, &id, overlap).await?;
    let data = SecretRotated {
        webhook_id: id,
        secret,
        previous_secret_expires_at: expires.map(rfc3339),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct TestEvent {
    /// Default `message.received`.
    event: Option<String>,
    message: Option<String>,
    /// With a user API key, instead of `x-session-id`.
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestQueued {
    session_id: String,
    delivery_ids: Vec<String>,
    queued: usize,
}

/// Send a test event to the session's webhooks (SAK: session API key).
#[utoipa::path(
    post, path = "/api/v1/webhooks/test", tag = "webhooks", security(("apiKey" = [])),
    params(("x-session-id" = Option<String>, Header, description = "with a user API key: the session")),
    request_body(content = Option<TestEvent>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 200, body = inline(Success<TestQueued>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    )
)]
pub async fn test(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> ApiResult {
    let key = messaging_key(&gw, &headers).await?;
    let req: Result<TestEvent, Error> = optional_json(&gw, body).await;
    let hint = req.as_ref().ok().and_then(|r| r.session_id.clone());
    let (caller, session) = messenger(&gw, &headers, key, hint.as_deref()).await?;
    let req = req?;
    let delivery_ids = gw
        .test_webhook(
            &caller,
            &session.id,
            req.event.as_deref(),
            req.message.as_deref(),
        )
        .await?;
    let data = TestQueued {
        session_id: session.id,
        queued: delivery_ids.len(),
        delivery_ids,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// Default 50; larger values are capped.
    page_size: Option<i64>,
    /// `nextPageToken` of the previous page.
    page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    deliveries: Vec<DeliveryData>,
    next_page_token: Option<String>,
}

/// The webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "webhook id"), Page),
    responses(
        (status = 200, body = inline(Success<DeliveryPage>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<Page>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let (list, next) = gw
        .list_deliveries(
            &caller,
            &id,
            p.page_size.unwrap_or(0),
            p.page_token.as_deref(),
        )
        .await?;
    let data = DeliveryPage {
        deliveries: list.into_iter().map(Into::into).collect(),
        next_page_token: next,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// Deliver one delivery again (same `webhook-id`).
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/deliveries/{deliveryId}/redeliver", tag = "webhooks",
    security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "webhook id"), ("deliveryId" = String, Path)),
    responses(
        (status = 200, body = inline(Success<DeliveryData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "DELIVERY_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn redeliver(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let d = gw.redeliver(&caller, &id, &delivery_id).await?;
    Ok(success(StatusCode::OK, gw.node_id(), DeliveryData::from(d)))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct Since {
    /// RFC 3339; everything that failed when omitted.
    since: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requeued {
    webhook_id: String,
    requeued: usize,
}

/// Requeue every failed or dead delivery since a time, in their original order.
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/redeliver-failed", tag = "webhooks",
    security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "webhook id")),
    request_body(content = Option<Since>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 200, body = inline(Success<Requeued>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn redeliver_failed(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let s: Since = optional_json(&gw, body).await?;
    let since = match s.since.filter(|s| !s.is_empty()) {
        None => 0,
        Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map_err(|_| Error::InvalidRequest("since must be an RFC 3339 time".into()))?
            .timestamp_millis(),
    };
    let requeued = gw.redeliver_failed(&caller, &id, since).await?;
    let data = Requeued {
        webhook_id: id,
        requeued,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// Inbound media, as referenced by `message.received` (`media.url`).
#[utoipa::path(
    get, path = "/api/v1/media/{id}", tag = "webhooks", security(("bearer" = []), ("apiKey" = [])),
    params(("id" = String, Path, description = "media id from the event")),
    responses(
        (status = 200, description = "the file, with its content type", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, body = ErrorBody), (status = 404, description = "MEDIA_NOT_FOUND", body = ErrorBody),
        (status = 410, description = "MEDIA_EXPIRED: past WAGATE_MEDIA_RETENTION_HOURS", body = ErrorBody),
    )
)]
pub async fn media(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let caller = manager(&gw, &headers).await?;
    let blob = gw.media(&caller, &id).await?;
    let mut resp = (
        [
            (header::CONTENT_TYPE, blob.mime_type.clone()),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
            // The type is the one judged from the bytes at upload; a browser must not guess.
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        blob.data,
    )
        .into_response();
    if let Some(v) = blob
        .filename
        .as_deref()
        .and_then(|n| content_disposition(n).parse().ok())
    {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `attachment` with the sender's file name (RFC 6266): an ASCII fallback in which anything
/// that could end the parameter or start another is replaced, and the exact name
/// percent-encoded in `filename*`.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' ' | '-' | '.' | '_' | '(' | ')' | '+' | ',' | '@' | '=' => c,
            c if c.is_ascii_alphanumeric() => c,
            _ => '_',
        })
        .collect();
    let exact = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_cannot_inject_parameters() {
        let v = super::content_disposition("a\"; filename=evil.exe; x=\\.pdf");
        assert_eq!(
            v,
            "attachment; filename=\"a__ filename=evil.exe_ x=_.pdf\"; \
             filename*=UTF-8''a%22%3B%20filename%3Devil%2Eexe%3B%20x%3D%5C%2Epdf"
        );
        assert!(super::content_disposition("ünï.pdf").ends_with("UTF-8''%C3%BCn%C3%AF%2Epdf"));
    }
}
