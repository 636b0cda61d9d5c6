//! Drains the webhook outbox. A lane (one webhook × one session) is leased in the database,
//! so one node at a time delivers it, in order; many lanes go out concurrently, bounded per
//! webhook and per node. Wakes when this node records an event, and polls for the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use super::{Settings, signing};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::storage::events::{DEAD, FAILED, SUCCEEDED};
use crate::storage::webhooks::{self as store, Job, Lane, Outcome, WebhookRow};
use crate::storage::{Db, DbConn, now_ms};

/// Deliveries taken from a lane per lease.
const BATCH: i64 = 64;
/// A lane's lease; a run stops taking new deliveries well before it ends (and soon, so a
/// lane with a backlog does not keep other lanes of its webhook waiting for a permit).
const LEASE: Duration = Duration::from_secs(60);
const RUN_BUDGET: Duration = Duration::from_secs(2);
/// Outcomes written together (the log is exact; a crash repeats at most this many).
const FLUSH_EVERY: usize = 16;
/// How often other nodes' events are looked for.
const POLL: Duration = Duration::from_millis(500);
/// Bytes of a failing response body kept in the delivery log.
const ERROR_BODY: usize = 256;

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// The dispatcher's own bookkeeping connection (leases, outcomes): one connection, so
    /// lane tasks never contend with each other for the write lock, and without a flush to
    /// disk per commit — losing the last outcomes in a crash only means a redelivery, which
    /// the at-least-once contract covers.
    writer: std::sync::Mutex<Option<DbConn>>,
    key: MasterKey,
    settings: Settings,
    node: String,
    client: super::http::Client,
    total: Arc<Semaphore>,
    per_webhook: Mutex<HashMap<String, Arc<Semaphore>>>,
    lane_done: Notify,
}

impl Dispatcher {
    pub fn new(db: Db, key: MasterKey, settings: Settings, node: String) -> Result<Self> {
        let client = super::http::client(&settings)?;
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                writer: std::sync::Mutex::new(None),
                total: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
                db,
                key,
                settings,
                node,
                client,
                per_webhook: Mutex::default(),
                lane_done: Notify::new(),
            }),
        })
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut signal = self.inner.db.event_signal();
        let node = self.inner.node.clone();
        match self
            .inner
            .db
            .run(move |c| store::release_all(c, &node))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(lanes = n, "took back webhook lanes held before a restart"),
            Err(e) => tracing::warn!(error = %e, "cannot release this node's webhook lanes"),
        }
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.start_due_lanes().await {
                tracing::warn!(error = %e, "webhook dispatch failed");
            }
            tokio::select! {
                _ = signal.changed() => {}
                _ = self.inner.lane_done.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Runs bookkeeping on the dispatcher's own connection (opened on first use, reopened
    /// after an error).
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                let mut c = inner.db.connect()?;
                // Bookkeeping commits need not wait for the disk (see `Inner::writer`).
                crate::storage::relax_commits(&mut c, true)?;
                *guard = Some(c);
            }
            let out = f(guard.as_mut().expect("connection opened above"));
            if out.is_err() {
                *guard = None;
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
    }

    fn webhook_permit(&self, webhook_id: &str) -> Option<OwnedSemaphorePermit> {
        let sem = self
            .inner
            .per_webhook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(webhook_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.inner.settings.per_webhook_concurrency.max(1),
                ))
            })
            .clone();
        sem.try_acquire_owned().ok()
    }

    /// Drops a webhook's limiter once none of its lanes runs, so the map holds only webhooks
    /// that are busy now, not every webhook ever delivered to.
    fn forget_idle(&self, webhook_id: &str) {
        let mut map = self
            .inner
            .per_webhook
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Each running lane's permit holds a reference; the map's own is the only one left.
        if map
            .get(webhook_id)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            map.remove(webhook_id);
        }
    }

    async fn start_due_lanes(&self) -> Result<()> {
        let limit = self.inner.total.available_permits() as i64;
        if limit == 0 {
            return Ok(());
        }
        let lanes = self
            .inner
            .db
            .run(move |c| store::due_lanes(c, now_ms(), limit * 2))
            .await?;
        let mut wanted = Vec::new();
        for lane in lanes {
            let Ok(total) = self.inner.total.clone().try_acquire_owned() else {
                break;
            };
            let Some(per) = self.webhook_permit(&lane.webhook_id) else {
                continue;
            };
            wanted.push((lane, (total, per)));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        // Every lease in one commit: a lane's first delivery does not wait for the others'.
        let (l, node) = (
            wanted
                .iter()
                .map(|(lane, _)| lane.clone())
                .collect::<Vec<_>>(),
            self.inner.node.clone(),
        );
        let leased = self
            .write(move |c| {
                let now = now_ms();
                let until = now + LEASE.as_millis() as i64;
                // One transaction: a failure leaves none of them leased.
                c.transaction(|c| {
                    l.iter()
                        .map(|lane| store::lease_lane(c, lane, &node, now, until))
                        .collect::<Result<Vec<bool>>>()
                })
            })
            .await?;
        for ((lane, permits), leased) in wanted.into_iter().zip(leased) {
            if !leased {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                me.run_lane(&lane).await;
                drop(permits);
                me.forget_idle(&lane.webhook_id);
                me.inner.lane_done.notify_one();
            });
        }
        Ok(())
    }

    async fn run_lane(&self, lane: &Lane) {
        let mut blocked_until = 0;
        if let Err(e) = self.deliver_lane(lane, &mut blocked_until).await {
            tracing::warn!(webhook = %lane.webhook_id, error = %e, "webhook lane failed");
        }
        let (l, node) = (lane.clone(), self.inner.node.clone());
        if let Err(e) = self
            .write(move |c| store::release_lane(c, &l, &node, blocked_until))
            .await
        {
            tracing::warn!(webhook = %lane.webhook_id, error = %e, "cannot release webhook lane");
        }
    }

    /// Delivers the lane's open deliveries in order; while it finds more (events recorded
    /// while it delivered) it keeps the lease and reloads, saving the release and the next
    /// lease, until the lane is drained, waits for a retry, or the run's time budget is spent.
    async fn deliver_lane(&self, lane: &Lane, blocked_until: &mut i64) -> Result<()> {
        let started = Instant::now();
        loop {
            let l = lane.clone();
            // The webhook is read each round: a change applies to the next delivery.
            let (hook, jobs) = self
                .inner
                .db
                .run(move |c| {
                    let hook = store::get_any(c, &l.webhook_id)?;
                    Ok((hook, store::lane_jobs(c, &l, BATCH)?))
                })
                .await?;
            let Some(hook) = hook.filter(|h| h.enabled) else {
                return Ok(());
            };
            if jobs.is_empty() {
                return Ok(());
            }
            let secrets = self.secrets(&hook)?;
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let mut outcomes = Vec::new();
            for job in jobs {
                if job.next_attempt_at > now_ms() {
                    *blocked_until = job.next_attempt_at;
                    return self.flush(&mut outcomes).await;
                }
                if started.elapsed() > RUN_BUDGET {
                    return self.flush(&mut outcomes).await;
                }
                let (outcome, verdict) = self.attempt(&hook, &secrets, &job).await;
                outcomes.push(outcome);
                match verdict {
                    Verdict::Next => {}
                    Verdict::Retry(at) => {
                        *blocked_until = at;
                        return self.flush(&mut outcomes).await;
                    }
                    Verdict::Gone => {
                        self.flush(&mut outcomes).await?;
                        let id = hook.id.clone();
                        self.write(move |c| {
                            store::disable(c, &id, "the receiver answered 410 Gone", now_ms())
                        })
                        .await?;
                        tracing::warn!(webhook = %hook.id, "webhook disabled: receiver answered 410 Gone");
                        return Ok(());
                    }
                }
                if outcomes.len() >= FLUSH_EVERY {
                    self.flush(&mut outcomes).await?;
                }
            }
            self.flush(&mut outcomes).await?;
            if started.elapsed() > RUN_BUDGET {
                return Ok(());
            }
        }
    }

    async fn flush(&self, outcomes: &mut Vec<Outcome>) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(outcomes);
        self.write(move |c| store::record_outcomes(c, &batch)).await
    }

    /// The current secret, then the previous one while its overlap lasts.
    fn secrets(&self, hook: &WebhookRow) -> Result<Vec<String>> {
        let open = |s: &str| -> Result<String> {
            String::from_utf8(self.inner.key.open(s)?).map_err(Error::internal)
        };
        let mut out = vec![open(&hook.secret_enc)?];
        if let (Some(prev), Some(until)) =
            (&hook.previous_secret_enc, hook.previous_secret_expires_at)
            && until > now_ms()
        {
            out.push(open(prev)?);
        }
        Ok(out)
    }

    async fn attempt(&self, hook: &WebhookRow, secrets: &[&str], job: &Job) -> (Outcome, Verdict) {
        let ts = now_ms() / 1000;
        let sig = signing::sign(secrets, &job.event_id, ts, job.data.as_bytes());
        let started = Instant::now();
        // A refusal by the address guard is a failure like any other, retried on the same
        // schedule: the receiver's DNS or the setting may change, and nothing is sent meanwhile.
        let sent = match self.inner.client.post(&hook.url) {
            Ok(request) => request
                .header("content-type", "application/json")
                .header("x-webhook-event", &job.kind)
                .header("x-webhook-signature", &sig.sak)
                .header("webhook-id", &job.event_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", &sig.standard)
                .body(job.data.clone())
                .send()
                .await
                .map_err(|e| describe(&e)),
            Err(refused) => Err(refused.to_string()),
        };
        let (status, error) = match sent {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    (Some(status.as_u16()), None)
                } else {
                    let why = if status.is_redirection() {
                        "redirects are not followed".to_owned()
                    } else {
                        let body = tokio::time::timeout(self.inner.settings.timeout, resp.bytes())
                            .await
                            .ok()
                            .and_then(|b| b.ok())
                            .unwrap_or_default();
                        let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY)]);
                        format!("HTTP {}: {}", status.as_u16(), text.trim())
                    };
                    (Some(status.as_u16()), Some(why))
                }
            }
            Err(why) => (None, Some(why)),
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        let now = now_ms();
        let attempts = job.attempts + 1;
        let mut outcome = Outcome {
            delivery_id: job.delivery_id.clone(),
            status_code: status.map(i32::from),
            latency_ms,
            error: error.clone(),
            at: now,
            state: SUCCEEDED,
            attempts,
            next_attempt_at: now,
        };
        let result = if error.is_none() {
            "succeeded"
        } else if status == Some(410) {
            "gone"
        } else {
            "failed"
        };
        metrics::counter!("wagate_webhook_attempts_total", "result" => result).increment(1);
        metrics::histogram!("wagate_webhook_attempt_seconds").record(latency_ms as f64 / 1000.0);
        if error.is_none() {
            return (outcome, Verdict::Next);
        }
        if status == Some(410) {
            outcome.state = DEAD;
            return (outcome, Verdict::Gone);
        }
        let delay = super::retry_delay(self.inner.settings.retry_base, attempts);
        let next = now + delay.as_millis() as i64;
        if next > job.created_at + self.inner.settings.retry_horizon.as_millis() as i64 {
            outcome.state = DEAD;
            return (outcome, Verdict::Next);
        }
        outcome.state = FAILED;
        outcome.next_attempt_at = next;
        (outcome, Verdict::Retry(next))
    }
}

/// What a lane does after an attempt.
enum Verdict {
    /// Delivered, or dead: go on with the lane.
    Next,
    /// Failed; the lane waits until then.
    Retry(i64),
    /// 410: the webhook is disabled.
    Gone,
}

/// A transport error as the delivery log shows it (never with the URL's query, which may
/// carry a receiver's token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
