//! `wagate.v1.WebhooksService` over the service layer.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::principal;
use super::convert::{json_to_struct, millis, non_empty, timestamp};
use crate::domain::Gateway;
use crate::domain::webhooks::{DeliveryView, EventView, WebhookView};
use crate::proto::v1::webhooks_service_server::WebhooksService;
use crate::proto::v1::*;
use crate::values::WebhookId;

pub struct WebhooksApi {
    gw: Gateway,
}

impl WebhooksApi {
    pub fn new(gw: Gateway) -> Self {
        WebhooksApi { gw }
    }
}

pub(crate) fn webhook(v: WebhookView) -> Webhook {
    Webhook {
        webhook_id: v.id.into(),
        session_id: v.session_id.map(String::from).unwrap_or_default(),
        url: v.url,
        events: v.events,
        enabled: v.enabled,
        created_at: Some(timestamp(v.created_at)),
        disabled_reason: v.disabled_reason.unwrap_or_default(),
    }
}

pub(crate) fn delivery(d: DeliveryView) -> Delivery {
    Delivery {
        delivery_id: d.id,
        event_id: d.event_id,
        event_type: d.event_type,
        state: d.state,
        attempts: d
            .attempts
            .into_iter()
            .map(|a| DeliveryAttempt {
                status_code: a.status_code.unwrap_or_default(),
                latency_ms: a.latency_ms,
                error: a.error.unwrap_or_default(),
                time: Some(timestamp(a.at)),
            })
            .collect(),
        created_at: Some(timestamp(d.created_at)),
    }
}

fn event(e: EventView) -> StreamEventsResponse {
    let data = match e.data {
        serde_json::Value::Object(m) => Some(json_to_struct(m)),
        _ => None,
    };
    StreamEventsResponse {
        event_id: e.id,
        r#type: e.kind,
        time: Some(timestamp(e.at)),
        session_id: e.session_id.map(String::from).unwrap_or_default(),
        data,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl WebhooksService for WebhooksApi {
    async fn create_webhook(
        &self,
        req: Request<CreateWebhookRequest>,
    ) -> Result<Response<CreateWebhookResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let created = self
            .gw
            .create_webhook(c, non_empty(m.session_id), &m.url, &m.events)
            .await?;
        Ok(Response::new(CreateWebhookResponse {
            webhook: Some(webhook(created.webhook)),
            secret: created.secret,
        }))
    }

    async fn list_webhooks(
        &self,
        req: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let hooks = self.gw.list_webhooks(c, non_empty(m.session_id)).await?;
        Ok(Response::new(ListWebhooksResponse {
            webhooks: hooks.into_iter().map(webhook).collect(),
        }))
    }

    async fn get_webhook(
        &self,
        req: Request<GetWebhookRequest>,
    ) -> Result<Response<GetWebhookResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let w = self
            .gw
            .get_webhook(c, &WebhookId::from(req.get_ref().webhook_id.as_str()))
            .await?;
        Ok(Response::new(GetWebhookResponse {
            webhook: Some(webhook(w)),
        }))
    }

    async fn update_webhook(
        &self,
        req: Request<UpdateWebhookRequest>,
    ) -> Result<Response<UpdateWebhookResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let masked = |field: &str| {
            m.update_mask
                .as_ref()
                .is_none_or(|mask| mask.paths.iter().any(|p| p == field))
        };
        let w = self
            .gw
            .update_webhook(
                c,
                &WebhookId::from(m.webhook_id.as_str()),
                masked("url").then_some(m.url.as_str()),
                masked("events").then_some(m.events.as_slice()),
                m.enabled.filter(|_| masked("enabled")),
            )
            .await?;
        Ok(Response::new(UpdateWebhookResponse {
            webhook: Some(webhook(w)),
        }))
    }

    async fn delete_webhook(
        &self,
        req: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        self.gw
            .delete_webhook(c, &WebhookId::from(req.get_ref().webhook_id.as_str()))
            .await?;
        Ok(Response::new(DeleteWebhookResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        req: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let overlap = m
            .overlap_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64));
        let rotated = self
            .gw
            .rotate_webhook_secret(c, &WebhookId::from(m.webhook_id.as_str()), overlap)
            .await?;
        Ok(Response::new(RotateWebhookSecretResponse {
            secret: rotated.secret,
            previous_secret_expires_at: rotated.previous_expires_at.map(timestamp),
        }))
    }

    async fn test_webhook(
        &self,
        req: Request<TestWebhookRequest>,
    ) -> Result<Response<TestWebhookResponse>, Status> {
        let p = principal(&req)?;
        let m = req.into_inner();
        let session = non_empty(m.session_id);
        let session = p.acting_session(&self.gw, session.as_deref()).await?;
        let delivery_ids = self
            .gw
            .test_webhook(
                p.caller(),
                &session.id,
                non_empty(m.event).as_deref(),
                non_empty(m.message).as_deref(),
            )
            .await?;
        Ok(Response::new(TestWebhookResponse {
            delivery_ids,
            session_id: session.id.to_string(),
        }))
    }

    async fn list_deliveries(
        &self,
        req: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let page = self
            .gw
            .list_deliveries(
                c,
                &WebhookId::from(m.webhook_id.as_str()),
                i64::from(m.page_size),
                Some(&m.page_token),
            )
            .await?;
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: page.deliveries.into_iter().map(delivery).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn redeliver_delivery(
        &self,
        req: Request<RedeliverDeliveryRequest>,
    ) -> Result<Response<RedeliverDeliveryResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let d = self
            .gw
            .redeliver(c, &WebhookId::from(m.webhook_id.as_str()), &m.delivery_id)
            .await?;
        Ok(Response::new(RedeliverDeliveryResponse {
            delivery: Some(delivery(d)),
        }))
    }

    async fn redeliver_failed(
        &self,
        req: Request<RedeliverFailedRequest>,
    ) -> Result<Response<RedeliverFailedResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let since = m.since.as_ref().map(millis).unwrap_or(0);
        let count = self
            .gw
            .redeliver_failed(c, &WebhookId::from(m.webhook_id.as_str()), since)
            .await?;
        Ok(Response::new(RedeliverFailedResponse {
            count: count as i64,
        }))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        req: Request<StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let s = self
            .gw
            .event_stream(c, non_empty(m.session_id), non_empty(m.after_event_id))
            .await?;
        Ok(Response::new(Box::pin(s.map(|e| Ok(event(e))))))
    }
}
