//! Webhook management, the delivery log and replay, in the SAK style (`{success, data}`,
//! camelCase); transcoded onto `wagate.v1.WebhooksService`. `POST /webhooks` and
//! `POST /webhooks/test` are the SAK document's forms.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::Gateway;
use crate::error::Error;
use crate::proto::v1::webhooks_service_server::WebhooksService;
use crate::proto::v1::{
    CreateWebhookRequest, DeleteWebhookRequest, Delivery, GetWebhookRequest, ListDeliveriesRequest,
    ListWebhooksRequest, RedeliverDeliveryRequest, RedeliverFailedRequest,
    RotateWebhookSecretRequest, TestWebhookRequest, UpdateWebhookRequest, Webhook,
};
use crate::transport::grpc::convert::{non_empty, timestamp};
use crate::transport::grpc::webhooks::WebhooksApi;
use crate::transport::rest::auth::{Messenger, NamesSession, SakManager, secured};
use crate::transport::rest::call;
use crate::transport::rest::envelope::{ApiResult, ErrorBody, Success, success};
use crate::transport::rest::extract::{Json, OptionalJson, Path, Query};
use crate::transport::rest::{rfc3339_of, rfc3339_opt};

/// Management routes (JWT or user key).
pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SakManager, _>(routes!(create, list)))
        .routes(secured::<SakManager, _>(routes!(get, update, remove)))
        .routes(secured::<SakManager, _>(routes!(rotate_secret)))
        .routes(secured::<SakManager, _>(routes!(deliveries)))
        .routes(secured::<SakManager, _>(routes!(redeliver)))
        .routes(secured::<SakManager, _>(routes!(redeliver_failed)))
}

/// The test route, a messaging call (session key), behind the messaging limit.
pub fn test_routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new().routes(secured::<Messenger<OptionalJson<TestEvent>>, _>(routes!(
        test
    )))
}

fn api(gw: &Gateway) -> WebhooksApi {
    WebhooksApi::new(gw.clone())
}

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

impl From<Webhook> for WebhookData {
    fn from(w: Webhook) -> Self {
        WebhookData {
            webhook_id: w.webhook_id,
            session_id: non_empty(w.session_id),
            url: w.url,
            events: w.events,
            enabled: w.enabled,
            disabled_reason: non_empty(w.disabled_reason),
            created_at: rfc3339_of(w.created_at),
            secret: None,
        }
    }
}

fn webhook_data(w: Option<Webhook>) -> WebhookData {
    w.unwrap_or_default().into()
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

impl From<Delivery> for DeliveryData {
    fn from(d: Delivery) -> Self {
        DeliveryData {
            delivery_id: d.delivery_id,
            event_id: d.event_id,
            event: d.event_type,
            state: d.state,
            created_at: rfc3339_of(d.created_at),
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptData {
                    status_code: (a.status_code != 0).then_some(a.status_code),
                    latency_ms: a.latency_ms,
                    error: non_empty(a.error),
                    at: rfc3339_of(a.time),
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
    #[schema(rename = "session.health")]
    SessionHealth,
    #[schema(rename = "broadcast.status")]
    BroadcastStatus,
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
    post, path = "/api/v1/webhooks", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/CreateWebhook"))),
    request_body = NewWebhook,
    responses(
        (status = 201, body = inline(Success<WebhookData>)),
        (status = 400, description = "INVALID_WEBHOOK_URL, INVALID_REQUEST", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn create(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Json(req): Json<NewWebhook>,
) -> ApiResult {
    let msg = CreateWebhookRequest {
        session_id: req.session_id.unwrap_or_default(),
        url: req.url,
        events: req.events,
    };
    let r = call::answer(api(&gw).create_webhook(call::request(Some(p), msg)).await)?;
    let data = WebhookData {
        secret: Some(r.secret),
        ..webhook_data(r.webhook)
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
    get, path = "/api/v1/webhooks", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/ListWebhooks"))),
    params(ListParams),
    responses((status = 200, body = inline(Success<Vec<WebhookData>>)), (status = 401, body = ErrorBody))
)]
pub async fn list(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Query(q): Query<ListParams>,
) -> ApiResult {
    let msg = ListWebhooksRequest {
        session_id: q.session_id.unwrap_or_default(),
    };
    let r = call::answer(api(&gw).list_webhooks(call::request(Some(p), msg)).await)?;
    let data: Vec<WebhookData> = r.webhooks.into_iter().map(Into::into).collect();
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// One webhook.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/GetWebhook"))),
    params(("id" = String, Path, description = "webhook id")),
    responses(
        (status = 200, body = inline(Success<WebhookData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "WEBHOOK_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn get(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = GetWebhookRequest { webhook_id: id };
    let r = call::answer(api(&gw).get_webhook(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        webhook_data(r.webhook),
    ))
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
    patch, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/UpdateWebhook"))),
    params(("id" = String, Path, description = "webhook id")),
    request_body(content = Option<WebhookChanges>, description = "only the fields to change"),
    responses(
        (status = 200, body = inline(Success<WebhookData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn update(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    OptionalJson(ch): OptionalJson<WebhookChanges>,
) -> ApiResult {
    // Only the fields the body has change: the mask says which.
    let paths = [
        ("url", ch.url.is_some()),
        ("events", ch.events.is_some()),
        ("enabled", ch.enabled.is_some()),
    ]
    .into_iter()
    .filter(|(_, given)| *given)
    .map(|(name, _)| name.to_owned())
    .collect();
    let msg = UpdateWebhookRequest {
        webhook_id: id,
        url: ch.url.unwrap_or_default(),
        events: ch.events.unwrap_or_default(),
        enabled: ch.enabled,
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    let r = call::answer(api(&gw).update_webhook(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        webhook_data(r.webhook),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeleted {
    webhook_id: String,
    deleted: bool,
}

/// Delete a webhook and its pending deliveries.
#[utoipa::path(
    delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/DeleteWebhook"))),
    params(("id" = String, Path, description = "webhook id")),
    responses(
        (status = 200, body = inline(Success<WebhookDeleted>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn remove(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = DeleteWebhookRequest {
        webhook_id: id.clone(),
    };
    call::answer(api(&gw).delete_webhook(call::request(Some(p), msg)).await)?;
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
    post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/RotateWebhookSecret"))),
    params(("id" = String, Path, description = "webhook id")),
    request_body(content = Option<Rotation>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 200, body = inline(Success<SecretRotated>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    OptionalJson(r): OptionalJson<Rotation>,
) -> ApiResult {
    let msg = RotateWebhookSecretRequest {
        webhook_id: id.clone(),
        overlap_seconds: r.overlap_seconds.map(|s| s.min(i64::MAX as u64) as i64),
    };
    let r = call::answer(
        api(&gw)
            .rotate_webhook_secret(call::request(Some(p), msg))
            .await,
    )?;
    let data = SecretRotated {
        webhook_id: id,
        secret: r.secret,
        previous_secret_expires_at: rfc3339_opt(r.previous_secret_expires_at),
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

impl NamesSession for TestEvent {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
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
    post, path = "/api/v1/webhooks/test", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/TestWebhook"))),
    params(("x-session-id" = Option<String>, Header, description = "with a user API key: the session")),
    request_body(content = Option<TestEvent>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 200, body = inline(Success<TestQueued>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    )
)]
pub async fn test(State(gw): State<Gateway>, m: Messenger<OptionalJson<TestEvent>>) -> ApiResult {
    let OptionalJson(req) = m.body;
    let msg = TestWebhookRequest {
        event: req.event.unwrap_or_default(),
        message: req.message.unwrap_or_default(),
        session_id: String::new(),
    };
    let r = call::answer(
        api(&gw)
            .test_webhook(call::request(Some(m.principal), msg))
            .await,
    )?;
    let data = TestQueued {
        session_id: r.session_id,
        queued: r.delivery_ids.len(),
        delivery_ids: r.delivery_ids,
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
    get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/ListDeliveries"))),
    params(("id" = String, Path, description = "webhook id"), Page),
    responses(
        (status = 200, body = inline(Success<DeliveryPage>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    Query(q): Query<Page>,
) -> ApiResult {
    let msg = ListDeliveriesRequest {
        webhook_id: id,
        page_size: q
            .page_size
            .unwrap_or(0)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        page_token: q.page_token.unwrap_or_default(),
    };
    let r = call::answer(api(&gw).list_deliveries(call::request(Some(p), msg)).await)?;
    let data = DeliveryPage {
        deliveries: r.deliveries.into_iter().map(Into::into).collect(),
        next_page_token: non_empty(r.next_page_token),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// Deliver one delivery again (same `webhook-id`).
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/deliveries/{deliveryId}/redeliver", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/RedeliverDelivery"))),
    params(("id" = String, Path, description = "webhook id"), ("deliveryId" = String, Path)),
    responses(
        (status = 200, body = inline(Success<DeliveryData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "DELIVERY_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn redeliver(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult {
    let msg = RedeliverDeliveryRequest {
        webhook_id: id,
        delivery_id,
    };
    let r = call::answer(
        api(&gw)
            .redeliver_delivery(call::request(Some(p), msg))
            .await,
    )?;
    let d = r.delivery.unwrap_or_default();
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
    extensions(("x-grpc-method" = json!("wagate.v1.WebhooksService/RedeliverFailed"))),
    params(("id" = String, Path, description = "webhook id")),
    request_body(content = Option<Since>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 200, body = inline(Success<Requeued>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn redeliver_failed(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    OptionalJson(s): OptionalJson<Since>,
) -> ApiResult {
    let since = match s.since.filter(|s| !s.is_empty()) {
        None => None,
        Some(t) => Some(timestamp(
            chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| Error::InvalidRequest("since must be an RFC 3339 time".into()))?
                .timestamp_millis(),
        )),
    };
    let msg = RedeliverFailedRequest {
        webhook_id: id.clone(),
        since,
    };
    let r = call::answer(api(&gw).redeliver_failed(call::request(Some(p), msg)).await)?;
    let data = Requeued {
        webhook_id: id,
        requeued: r.count as usize,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}
