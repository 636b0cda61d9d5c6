//! Webhook registrations, the delivery log, replay and the event stream, for every transport.

use std::time::Duration;

use futures::Stream;
use serde_json::{Map, Value};

use super::Gateway;
use super::auth::Caller;
use super::text::{no_nul, no_nul_each, no_nul_opt};
use crate::error::{Error, Result};
use crate::events::{self as ev, NewEvent};
use crate::storage::events::{self as log, Cursor, Fanout};
use crate::storage::now_ms;
use crate::storage::webhooks::{self as store, Changes, WebhookRow};
use crate::values::{SessionId, WebhookId};
use crate::webhooks::{new_secret, parse_filter, validate_url};

/// An old secret signs beside the new one for at most this long: a rotation is meant to
/// end, and a receiver must not trust a leaked secret for months.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct WebhookView {
    pub id: WebhookId,
    /// `None` for a project-wide webhook.
    pub session_id: Option<SessionId>,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
}

impl From<WebhookRow> for WebhookView {
    fn from(r: WebhookRow) -> Self {
        WebhookView {
            id: r.id,
            session_id: r.device_id,
            url: r.url,
            events: r.events.split(',').map(str::to_owned).collect(),
            enabled: r.enabled,
            disabled_reason: r.disabled_reason,
            created_at: r.created_at,
        }
    }
}

/// A webhook just registered, with its signing secret (shown only here).
#[derive(Debug, Clone)]
pub struct CreatedWebhook {
    pub webhook: WebhookView,
    pub secret: String,
}

/// A webhook row about to be stored, with its secret in the clear.
pub(super) struct NewWebhook {
    pub row: WebhookRow,
    pub secret: String,
}

impl From<NewWebhook> for CreatedWebhook {
    fn from(n: NewWebhook) -> Self {
        CreatedWebhook {
            webhook: n.row.into(),
            secret: n.secret,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttemptView {
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub state: String,
    pub attempts: Vec<AttemptView>,
    pub created_at: i64,
}

/// A webhook's new signing secret (shown only here), and until when the one it replaces
/// still signs beside it (`None`: it stopped at once).
#[derive(Debug, Clone)]
pub struct RotatedSecret {
    pub secret: String,
    pub previous_expires_at: Option<i64>,
}

/// One page of a webhook's delivery log, newest first.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EventView {
    pub id: String,
    pub kind: String,
    pub at: i64,
    pub session_id: Option<SessionId>,
    pub data: Value,
}

/// A delivery with its attempts (picked from `attempts`, oldest first).
fn delivery_view(r: store::DeliveryRow, attempts: &[store::AttemptRow]) -> DeliveryView {
    DeliveryView {
        attempts: attempts
            .iter()
            .filter(|a| a.delivery_id == r.id)
            .map(|a| AttemptView {
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                error: a.error.clone(),
                at: a.at,
            })
            .collect(),
        id: r.id,
        event_id: r.event_id,
        event_type: r.kind,
        state: r.state,
        created_at: r.created_at,
    }
}

/// Deliveries listed per page at most.
const MAX_PAGE: i64 = 500;
/// Events read from storage per round of a stream.
const STREAM_BATCH: i64 = 256;
/// How often a stream looks for events recorded by other nodes.
const STREAM_POLL: Duration = Duration::from_secs(1);

impl Gateway {
    async fn own_webhook(&self, caller: &Caller, id: &WebhookId) -> Result<WebhookRow> {
        no_nul("webhook id", id)?;
        let (p, id) = (caller.project.row.id.clone(), id.clone());
        self.db()
            .run(move |c| store::get(c, &p, &id))
            .await?
            .ok_or(Error::WebhookNotFound)
    }

    /// A stored media file of the caller's project (inbound media that events reference).
    pub async fn media(
        &self,
        caller: &Caller,
        media_id: &str,
    ) -> Result<crate::storage::media::MediaBlob> {
        no_nul("media id", media_id)?;
        let (p, id) = (caller.project.row.id.clone(), media_id.to_owned());
        match self
            .db()
            .run(move |c| crate::storage::media::project_media(c, &p, &id))
            .await?
        {
            None => Err(Error::MediaNotFound),
            Some(m) if m.purged_at.is_some() => Err(Error::MediaExpired),
            Some(m) => Ok(m.blob),
        }
    }

    /// An optional session scope (empty = none), checked to be the caller's.
    async fn scope(
        &self,
        caller: &Caller,
        session_id: Option<String>,
    ) -> Result<Option<SessionId>> {
        let Some(s) = session_id.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(self.own_session(caller, &s).await?.id))
    }

    /// Registers a webhook; the secret is returned here only.
    pub async fn create_webhook(
        &self,
        caller: &Caller,
        session_id: Option<String>,
        url: &str,
        events: &[String],
    ) -> Result<CreatedWebhook> {
        let mut hook = self.new_webhook(caller, url, events)?;
        hook.row.device_id = self.scope(caller, session_id).await?;
        let stored = hook.row.clone();
        self.db().run(move |c| store::insert(c, &stored)).await?;
        Ok(hook.into())
    }

    /// A project-wide webhook registration ready to store: its URL and filter validated, a
    /// fresh secret sealed.
    pub(super) fn new_webhook(
        &self,
        caller: &Caller,
        url: &str,
        events: &[String],
    ) -> Result<NewWebhook> {
        no_nul("url", url)?;
        no_nul_each("events", events)?;
        let url = validate_url(url, self.settings().webhooks.allow_private)?;
        let filter = parse_filter(events)?;
        let secret = new_secret();
        let now = now_ms();
        let row = WebhookRow {
            id: WebhookId::new(uuid::Uuid::now_v7().to_string()),
            project_id: caller.project.row.id.clone(),
            device_id: None,
            url,
            events: filter,
            enabled: true,
            disabled_reason: None,
            secret_enc: self.inner.key.seal(secret.as_bytes()),
            previous_secret_enc: None,
            previous_secret_expires_at: None,
            created_at: now,
            updated_at: now,
        };
        Ok(NewWebhook { row, secret })
    }

    pub async fn list_webhooks(
        &self,
        caller: &Caller,
        session_id: Option<String>,
    ) -> Result<Vec<WebhookView>> {
        let session_id = self.scope(caller, session_id).await?;
        let p = caller.project.row.id.clone();
        let rows = self
            .db()
            .run(move |c| store::list(c, &p, session_id.as_ref()))
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub async fn get_webhook(&self, caller: &Caller, id: &WebhookId) -> Result<WebhookView> {
        Ok(self.own_webhook(caller, id).await?.into())
    }

    /// Takes effect at the next delivery: no session restart.
    pub async fn update_webhook(
        &self,
        caller: &Caller,
        id: &WebhookId,
        url: Option<&str>,
        events: Option<&[String]>,
        enabled: Option<bool>,
    ) -> Result<WebhookView> {
        no_nul("webhook id", id)?;
        no_nul_opt("url", url)?;
        no_nul_each("events", events.unwrap_or_default())?;
        let ws = &self.settings().webhooks;
        let changes = Changes {
            url: url
                .filter(|u| !u.is_empty())
                .map(|u| validate_url(u, ws.allow_private))
                .transpose()?,
            events: events
                .filter(|e| !e.is_empty())
                .map(parse_filter)
                .transpose()?,
            enabled,
        };
        let (p, id) = (caller.project.row.id.clone(), id.clone());
        self.db()
            .run(move |c| store::update(c, &p, &id, changes, now_ms()))
            .await?
            .map(Into::into)
            .ok_or(Error::WebhookNotFound)
    }

    pub async fn delete_webhook(&self, caller: &Caller, id: &WebhookId) -> Result<()> {
        no_nul("webhook id", id)?;
        let (p, id) = (caller.project.row.id.clone(), id.clone());
        if self.db().run(move |c| store::delete(c, &p, &id)).await? {
            Ok(())
        } else {
            Err(Error::WebhookNotFound)
        }
    }

    /// A new secret (returned once); the current one keeps signing for `overlap` (default
    /// from settings; zero ends it now). Returns the secret and when the old one expires.
    pub async fn rotate_webhook_secret(
        &self,
        caller: &Caller,
        id: &WebhookId,
        overlap: Option<Duration>,
    ) -> Result<RotatedSecret> {
        if overlap.is_some_and(|o| o > MAX_SECRET_OVERLAP) {
            return Err(Error::InvalidRequest(format!(
                "the overlap may be at most {} seconds",
                MAX_SECRET_OVERLAP.as_secs()
            )));
        }
        let hook = self.own_webhook(caller, id).await?;
        let overlap = overlap.unwrap_or(self.settings().webhooks.secret_overlap);
        let now = now_ms();
        let secret = new_secret();
        let sealed = self.inner.key.seal(secret.as_bytes());
        let expires = (!overlap.is_zero()).then(|| now + overlap.as_millis() as i64);
        let previous = expires.map(|e| (hook.secret_enc.clone(), e));
        let id = hook.id.clone();
        self.db()
            .run(move |c| {
                store::set_secrets(
                    c,
                    &id,
                    &sealed,
                    previous.as_ref().map(|(s, e)| (s.as_str(), *e)),
                    now,
                )
            })
            .await?;
        Ok(RotatedSecret {
            secret,
            previous_expires_at: expires,
        })
    }

    /// Sends a test event to the session's webhooks (its own and the project-wide ones),
    /// whatever their filters. Returns the delivery ids.
    pub async fn test_webhook(
        &self,
        caller: &Caller,
        session_id: &str,
        event: Option<&str>,
        message: Option<&str>,
    ) -> Result<Vec<String>> {
        no_nul_opt("event", event)?;
        no_nul_opt("message", message)?;
        let session = self.own_session(caller, session_id).await?;
        let kind = match event.filter(|e| !e.is_empty()) {
            None => ev::MESSAGE_RECEIVED,
            Some(e) => *ev::KINDS
                .iter()
                .find(|k| **k == e)
                .ok_or_else(|| Error::InvalidRequest(format!("unknown event '{e}'")))?,
        };
        let message = message.unwrap_or("wagate webhook test").to_owned();
        if message.len() > 4096 {
            return Err(Error::InvalidRequest(
                "message is longer than 4096 bytes".into(),
            ));
        }
        let (p, d) = (session.project_id.clone(), session.id.clone());
        self.db()
            .run(move |c| {
                c.transaction(|c| {
                    let hooks: Vec<WebhookId> = store::list(c, &p, Some(&d))?
                        .into_iter()
                        .filter(|w| w.enabled)
                        .map(|w| w.id)
                        .collect();
                    let mut fields = Map::new();
                    fields.insert("test".into(), true.into());
                    fields.insert("text".into(), message.clone().into());
                    fields.insert("message".into(), message.into());
                    let e = NewEvent {
                        project_id: p.clone(),
                        device_id: Some(d.clone()),
                        kind,
                        fields,
                    };
                    Ok(log::record_to(c, e, Fanout::Only(&hooks), now_ms())?.delivery_ids)
                })
            })
            .await
    }

    pub async fn list_deliveries(
        &self,
        caller: &Caller,
        webhook_id: &WebhookId,
        page_size: i64,
        page_token: Option<&str>,
    ) -> Result<DeliveryPage> {
        let hook = self.own_webhook(caller, webhook_id).await?;
        let before = page_token
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| Error::InvalidRequest("invalid page_token".into()))
            })
            .transpose()?;
        let limit = if page_size <= 0 {
            50
        } else {
            page_size.min(MAX_PAGE)
        };
        let (rows, attempts) = self
            .db()
            .run(move |c| {
                let rows = store::deliveries(c, &hook.id, before, limit)?;
                let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
                Ok((rows, store::attempts(c, &ids)?))
            })
            .await?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.seq.to_string()))
            .flatten();
        let views = rows
            .into_iter()
            .map(|r| delivery_view(r, &attempts))
            .collect();
        Ok(DeliveryPage {
            deliveries: views,
            next_page_token: next,
        })
    }

    /// Sends one delivery again (whatever its state), as soon as its lane allows.
    pub async fn redeliver(
        &self,
        caller: &Caller,
        webhook_id: &WebhookId,
        delivery_id: &str,
    ) -> Result<DeliveryView> {
        no_nul("delivery id", delivery_id)?;
        let hook = self.own_webhook(caller, webhook_id).await?;
        let d = delivery_id.to_owned();
        let found = self
            .db()
            .run(move |c| {
                if !store::redeliver(c, &hook.id, &d, now_ms())? {
                    return Ok(None);
                }
                let row = store::delivery(c, &hook.id, &d)?;
                let attempts = store::attempts(c, std::slice::from_ref(&d))?;
                Ok(row.map(|r| (r, attempts)))
            })
            .await?;
        let (row, attempts) = found.ok_or(Error::DeliveryNotFound)?;
        Ok(delivery_view(row, &attempts))
    }

    /// Sends again everything of this webhook that failed or died since `since_ms`.
    pub async fn redeliver_failed(
        &self,
        caller: &Caller,
        webhook_id: &WebhookId,
        since_ms: i64,
    ) -> Result<usize> {
        let hook = self.own_webhook(caller, webhook_id).await?;
        self.db()
            .run(move |c| store::redeliver_failed(c, &hook.id, since_ms, now_ms()))
            .await
    }

    /// A project's (or one session's) events: those after `after_event_id` from storage,
    /// then live ones as they are recorded, in one order with no gap and no repeat.
    pub async fn event_stream(
        &self,
        caller: &Caller,
        session_id: Option<String>,
        after_event_id: Option<String>,
    ) -> Result<impl Stream<Item = EventView> + Send + 'static> {
        super::text::no_nul_opt("after event id", after_event_id.as_deref())?;
        let session_id = self.scope(caller, session_id).await?;
        let permit = self
            .inner
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded)?;
        let project = caller.project.row.id.clone();
        let p = project.clone();
        let mut cursor = match after_event_id.filter(|s| !s.is_empty()) {
            Some(id) => self
                .db()
                .run(move |c| log::cursor_of(c, &p, &id))
                .await?
                .ok_or(Error::EventNotFound)?,
            None => self.db().run(move |c| log::tail(c, &p)).await?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<EventView>(STREAM_BATCH as usize);
        let db = self.db().clone();
        let mut signal = db.event_signal();
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                let (p, s) = (project.clone(), session_id.clone());
                let rows = match db
                    .run(move |c| log::after(c, &p, s.as_ref(), cursor, STREAM_BATCH))
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream read failed");
                        Vec::new()
                    }
                };
                let full = rows.len() as i64 == STREAM_BATCH;
                for r in rows {
                    cursor = Cursor {
                        txid: r.txid,
                        seq: r.seq,
                    };
                    let view = EventView {
                        data: log::data_json(&r),
                        id: r.id,
                        kind: r.kind,
                        at: r.created_at,
                        session_id: r.device_id,
                    };
                    if tx.send(view).await.is_err() {
                        return; // the client went away
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    _ = signal.changed() => {}
                    _ = tokio::time::sleep(STREAM_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        }))
    }
}
