//! Campaigns: a template sent to one number (direct, values from the request) or to every
//! contact of a list (values from its columns), through one or several sessions (recipient n
//! through session n mod count), now or at `send_at`. A campaign is expanded into its
//! recipient rows when it is created; the dispatcher ([`Gateway::run_broadcasts`], on every
//! node) starts due campaigns, claims due recipients (leased, `SKIP LOCKED` on PostgreSQL),
//! skips suppressed numbers (`OPTED_OUT`), renders each message and hands it to the outbound
//! queue under an idempotency key of its own (`broadcast:<id>:<n>`), so a crash between the
//! two is repaired by the next claim with no second message. From there the message is an
//! ordinary queued message (rate limit, quota, retries, receipts); a recipient's status is
//! its message's. Which sessions a campaign may send through is account health's call
//! (`health.rs`); each state change of a campaign is a `broadcast.status` event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::health;
use super::media::HeaderMedia;
use super::model::{HeaderFormat, pick, variable_count};
use super::numbers::NumberGate;
use super::pacing::{Decision, MAX_GAP_MS, Policy, SlotRequest, take_slot};
use super::render::{Params, render};
use super::templates::TemplateView;
use crate::domain::Gateway;
use crate::domain::auth::Caller;
use crate::domain::messaging::normalize_phone;
use crate::domain::text::{no_nul, no_nul_each};
use crate::error::{Error, Result};
use crate::storage::accept::{AcceptItem, Accepted, IdempotencyKey, Limits};
use crate::storage::broadcasts::{
    self as store, BroadcastRow, CANCELLED, COMPLETED, CREATED, NewRecipient, PAUSED, RUNNING,
    SCHEDULED,
};
use crate::storage::contact_lists::SUCCESS;
use crate::storage::messages::NewMessage;
use crate::storage::{now_ms, suppressions};
use crate::values::{BroadcastId, ContactListId, MessageStatus, SessionId, TemplateId};

/// Sessions one campaign may spread over.
pub const MAX_SESSIONS: usize = 50;
/// Campaigns and log entries per page at most.
pub const MAX_PAGE: i64 = 1000;
/// Recipients one dispatch round claims.
const CLAIM_BATCH: i64 = 200;
/// Recipients of a round dispatched at once (each a few database round trips).
const DISPATCH_CONCURRENCY: usize = 8;
/// A claim's lease: a node that dies mid-round leaves its recipients to others after this.
const CLAIM_LEASE_MS: i64 = 60_000;
/// How often the dispatcher looks for work when nothing wakes it.
const POLL: Duration = Duration::from_millis(500);
/// The least spacing of a held lane's recipients (see `store::hold_lane`).
const MIN_LANE_STEP_MS: i64 = 100;
/// How long a recipient held by the rate limit waits at least.
const MIN_HOLD_MS: i64 = 1_000;

/// The default send policy of projects that set none (see `pacing`; a project and a
/// campaign may ask for their own), and the reply window.
#[derive(Debug, Clone)]
pub struct BroadcastSettings {
    /// The gap between two paced messages of one session is random in this range: steady
    /// machine-like intervals and bursts are what gets numbers banned.
    pub pacing_min: Duration,
    pub pacing_max: Duration,
    /// Paced messages one session sends per local day at most (0: no cap).
    pub daily_cap: i64,
    /// Of those, to numbers the session never talked with (0: no cap): many first contacts
    /// in a day is the strongest spam signal.
    pub new_contact_cap: i64,
    /// A session linked this recently gets `warmup_start_pct` % of the caps on its first
    /// day, rising evenly to 100 % (0: no ramp): a fresh account sending at full volume is
    /// banned fastest.
    pub warmup_days: i32,
    pub warmup_start_pct: i32,
    /// The typing indicator before each paced message, growing with the text between these
    /// (a zero maximum: none).
    pub typing_min: Duration,
    pub typing_max: Duration,
    /// A recipient who writes back on the session within this long after the message was
    /// sent counts as `replied`.
    pub reply_window: Duration,
}

impl Default for BroadcastSettings {
    fn default() -> Self {
        BroadcastSettings {
            pacing_min: Duration::from_secs(4),
            pacing_max: Duration::from_secs(12),
            daily_cap: 1000,
            new_contact_cap: 200,
            warmup_days: 7,
            warmup_start_pct: 20,
            typing_min: Duration::from_secs(1),
            typing_max: Duration::from_secs(5),
            reply_window: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A campaign's own pacing (each field: the default when `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacing {
    pub min_ms: Option<i64>,
    pub max_ms: Option<i64>,
    pub daily_cap: Option<i64>,
}

/// What a send fills the template with: values (direct) or column names (contact list).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mapping {
    #[serde(default)]
    pub body: Vec<String>,
    #[serde(default)]
    pub header: Vec<String>,
    #[serde(default)]
    pub buttons: BTreeMap<usize, String>,
    #[serde(default)]
    pub media_url: String,
    #[serde(default)]
    pub filename: String,
    /// Qontak's `value` of each body entry (a label for a direct send's value), echoed back.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Not a value but the campaign's option to check each number on WhatsApp first and
    /// skip those not there (`numbers.rs`); kept with the parameters, as they are read
    /// together.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_unregistered: bool,
}

#[derive(Debug, Clone)]
pub enum Target {
    /// One number; `mapping` holds the values.
    Direct { phone: String, name: String },
    /// Every contact of a list; `mapping.body`/`header`/`buttons` name its columns
    /// (`full_name` and `phone_number` are columns too).
    List { contact_list_id: ContactListId },
}

#[derive(Debug, Clone)]
pub struct BroadcastSpec {
    pub name: String,
    pub template_id: TemplateId,
    pub language: String,
    pub session_ids: Vec<String>,
    pub target: Target,
    pub mapping: Mapping,
    /// Unix ms; `None` or past: now.
    pub send_at: Option<i64>,
    pub pacing: Pacing,
}

/// Recipients by status: `created` (not handed over yet), `pending` (queued, or held),
/// `sent`, `delivered`, `read`, `failed` (with `OPTED_OUT` and the like), `cancelled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub created: i64,
    pub pending: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Of those sent: how many wrote back within the reply window (not a status of its own
    /// in the counts above, as on Qontak).
    pub replied: i64,
}

#[derive(Debug, Clone)]
pub struct BroadcastView {
    pub row: BroadcastRow,
    pub session_ids: Vec<String>,
    pub mapping: Mapping,
    pub counts: StatusCounts,
    pub template: Option<TemplateView>,
    /// Why it is not sending right now, if it is not (see `health`).
    pub waiting_reason: Option<String>,
    /// When it should finish (Unix ms), if that can be told.
    pub eta: Option<i64>,
}

/// One recipient as the log shows it.
#[derive(Debug, Clone)]
pub struct RecipientView {
    pub seq: i64,
    pub phone: String,
    pub full_name: String,
    pub status: &'static str,
    pub session_id: String,
    pub message_id: Option<String>,
    pub wa_message_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Held by pacing or a rate limit, and why.
    pub held: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
    pub failed_at: Option<i64>,
}

/// A recipient's status from its own state and its message's.
fn status_of(state: &str, message: Option<&str>, held: bool) -> &'static str {
    match (state, message) {
        ("created", _) if held => "pending",
        ("created", _) => "created",
        ("cancelled", _) => "cancelled",
        ("enqueued", Some(s)) => match MessageStatus::parse(s) {
            Some(MessageStatus::Sent) => "sent",
            Some(MessageStatus::Delivered) => "delivered",
            Some(MessageStatus::Read) => "read",
            Some(MessageStatus::Failed) => "failed",
            _ => "pending",
        },
        ("enqueued", None) => "pending",
        _ => "failed",
    }
}

pub(super) fn counts_of(rows: Vec<store::CountRow>) -> StatusCounts {
    let mut c = StatusCounts::default();
    for r in rows {
        let slot = match status_of(&r.r_state, r.m_status.as_deref(), false) {
            "created" => &mut c.created,
            "pending" => &mut c.pending,
            "sent" => &mut c.sent,
            "delivered" => &mut c.delivered,
            "read" => &mut c.read,
            "cancelled" => &mut c.cancelled,
            _ => &mut c.failed,
        };
        *slot += r.n;
    }
    c
}

/// The values of one recipient: the direct send's own, or its contact's columns.
fn values_for(
    mapping: &Mapping,
    from_columns: bool,
    phone: &str,
    full_name: &str,
    vars: &Map<String, Value>,
) -> Params {
    let column = |name: &String| -> String {
        match name.as_str() {
            "full_name" | "name" => full_name.to_owned(),
            "phone_number" | "phone" => phone.to_owned(),
            other => vars
                .get(other)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        }
    };
    let each = |v: &Vec<String>| -> Vec<String> {
        if from_columns {
            v.iter().map(column).collect()
        } else {
            v.clone()
        }
    };
    Params {
        body: each(&mapping.body),
        header: each(&mapping.header),
        buttons: mapping
            .buttons
            .iter()
            .map(|(k, v)| (*k, if from_columns { column(v) } else { v.clone() }))
            .collect(),
        media_url: mapping.media_url.clone(),
        filename: mapping.filename.clone(),
    }
}

impl Gateway {
    /// Creates a campaign and its recipients; it starts at `send_at` (now when absent or
    /// past). A wrong number of body values is Qontak's 422, answered here, not per recipient.
    pub async fn create_broadcast(
        &self,
        caller: &Caller,
        spec: BroadcastSpec,
    ) -> Result<BroadcastView> {
        no_nul("name", &spec.name)?;
        no_nul("language", &spec.language)?;
        no_nul_each("body parameters", &spec.mapping.body)?;
        no_nul_each("header parameters", &spec.mapping.header)?;
        no_nul_each("labels", &spec.mapping.labels)?;
        if spec.session_ids.is_empty() || spec.session_ids.len() > MAX_SESSIONS {
            return Err(Error::InvalidRequest(format!(
                "a broadcast goes through 1 to {MAX_SESSIONS} sessions (channel_integration_id)"
            )));
        }
        let mut sessions = Vec::with_capacity(spec.session_ids.len());
        for s in &spec.session_ids {
            sessions.push(self.own_session(caller, s).await?.id.into_string());
        }
        let template = self.get_template(caller, &spec.template_id).await?;
        let variant = pick(&template.variants, &spec.language)
            .ok_or(Error::TemplateNotFound)?
            .clone();
        let now = now_ms();
        let send_at = spec.send_at.filter(|t| *t > now);
        let id = BroadcastId::new(uuid::Uuid::now_v7().to_string());
        // What the campaign does not set is the project's policy as it is now.
        let policy = self.send_policy(caller).await?;
        let pacing_min_ms = spec.pacing.min_ms.unwrap_or(policy.min_gap_ms);
        let pacing_max_ms = spec
            .pacing
            .max_ms
            .unwrap_or(policy.max_gap_ms)
            .max(pacing_min_ms);
        let daily_cap = spec.pacing.daily_cap.unwrap_or(policy.daily_cap);
        if !(0..=MAX_GAP_MS).contains(&pacing_min_ms) || pacing_max_ms > MAX_GAP_MS || daily_cap < 0
        {
            return Err(Error::InvalidRequest(format!(
                "pacing: gaps are 0 to {MAX_GAP_MS} ms, the daily cap 0 (none) or more"
            )));
        }
        let (kind, list_id, recipients) = match &spec.target {
            Target::Direct { phone, name } => {
                let phone = normalize_phone(phone, &self.settings().default_country_code)?;
                no_nul("to_name", name)?;
                // Rendered now: a wrong value count is refused before anything is stored.
                render(
                    &variant,
                    &values_for(&spec.mapping, false, &phone, name, &Map::new()),
                )?;
                let r = NewRecipient {
                    broadcast_id: id.clone(),
                    seq: 1,
                    phone,
                    full_name: name.clone(),
                    variables: "{}".into(),
                    session_slot: 0,
                    state: CREATED.into(),
                    available_at: send_at.unwrap_or(now),
                    created_at: now,
                    updated_at: now,
                };
                ("direct", None, vec![r])
            }
            Target::List { contact_list_id } => {
                let list = self.get_contact_list(caller, contact_list_id).await?;
                if list.progress != SUCCESS {
                    return Err(Error::InvalidRequest(format!(
                        "the contact list is {} (it must have imported successfully)",
                        list.progress
                    )));
                }
                let wanted = variable_count("body", &variant.body)?;
                if spec.mapping.body.len() != wanted {
                    return Err(Error::TemplateVariables(wanted));
                }
                let known = |c: &String| {
                    matches!(c.as_str(), "full_name" | "name" | "phone_number" | "phone")
                        || list.variables.contains(c)
                };
                let columns = spec
                    .mapping
                    .body
                    .iter()
                    .chain(&spec.mapping.header)
                    .chain(spec.mapping.buttons.values());
                for c in columns {
                    if !known(c) {
                        return Err(Error::InvalidRequest(format!(
                            "the contact list has no column {c:?} (it has full_name, phone_number{})",
                            list.variables
                                .iter()
                                .map(|v| format!(", {v}"))
                                .collect::<String>()
                        )));
                    }
                }
                (
                    "contact_list",
                    Some(contact_list_id.to_string()),
                    Vec::new(),
                )
            }
        };
        let row = BroadcastRow {
            id: id.clone(),
            project_id: caller.project.row.id.clone(),
            name: if spec.name.trim().is_empty() {
                template.name.clone()
            } else {
                spec.name.trim().chars().take(256).collect()
            },
            template_id: template.id.to_string(),
            language: variant.language.clone(),
            kind: kind.into(),
            contact_list_id: list_id.clone(),
            session_ids: serde_json::to_string(&sessions).map_err(Error::internal)?,
            parameters: serde_json::to_string(&spec.mapping).map_err(Error::internal)?,
            state: if send_at.is_some() {
                SCHEDULED
            } else {
                RUNNING
            }
            .into(),
            execute_type: if send_at.is_some() {
                "specific"
            } else {
                "immediately"
            }
            .into(),
            send_at: send_at.unwrap_or(now),
            pacing_min_ms,
            pacing_max_ms,
            daily_cap,
            recipients_total: 0,
            created_at: now,
            updated_at: now,
            started_at: send_at.is_none().then_some(now),
            finished_at: None,
        };
        let stored = row.clone();
        let n_sessions = sessions.len() as i32;
        self.db()
            .run(move |c| {
                store::create(
                    c,
                    &stored,
                    &recipients,
                    stored.contact_list_id.as_deref().map(|l| (l, n_sessions)),
                )
            })
            .await?;
        self.inner.broadcasts_wake.notify_one();
        self.get_broadcast(caller, &id).await
    }

    pub async fn get_broadcast(&self, caller: &Caller, id: &BroadcastId) -> Result<BroadcastView> {
        no_nul("broadcast id", id)?;
        let (p, bid) = (caller.project.row.id.clone(), id.clone());
        let window = self.settings().broadcasts.reply_window.as_millis() as i64;
        let (row, counts, replied) = self
            .db()
            .run(move |c| {
                let Some(row) = store::get(c, &p, &bid)? else {
                    return Ok(None);
                };
                let counts = store::counts(c, &bid)?;
                let replied = store::replied(c, &bid, window)?;
                Ok(Some((row, counts, replied)))
            })
            .await?
            .ok_or(Error::BroadcastNotFound)?;
        let template = self
            .get_template(caller, &TemplateId::from(row.template_id.as_str()))
            .await
            .ok();
        let counts = StatusCounts {
            replied,
            ..counts_of(counts)
        };
        let (waiting_reason, eta) = self.waiting_of(&row, &counts).await?;
        Ok(BroadcastView {
            session_ids: serde_json::from_str(&row.session_ids).unwrap_or_default(),
            mapping: serde_json::from_str(&row.parameters).unwrap_or_default(),
            counts,
            template,
            waiting_reason,
            eta,
            row,
        })
    }

    /// A page of the project's campaigns, newest first, and how many there are.
    pub async fn list_broadcasts(
        &self,
        caller: &Caller,
        skip: i64,
        limit: i64,
    ) -> Result<(Vec<BroadcastView>, i64)> {
        let p = caller.project.row.id.clone();
        let (skip, limit) = (skip.max(0), limit.clamp(1, 100));
        let window = self.settings().broadcasts.reply_window.as_millis() as i64;
        let (rows, total) = self
            .db()
            .run(move |c| {
                let (rows, total) = store::list(c, &p, skip, limit)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let counts = StatusCounts {
                        replied: store::replied(c, &r.id, window)?,
                        ..counts_of(store::counts(c, &r.id)?)
                    };
                    out.push((r, counts));
                }
                Ok((out, total))
            })
            .await?;
        let mut templates: HashMap<String, Option<TemplateView>> = HashMap::new();
        let mut views = Vec::with_capacity(rows.len());
        for (row, counts) in rows {
            if !templates.contains_key(&row.template_id) {
                let t = self
                    .get_template(caller, &TemplateId::from(row.template_id.as_str()))
                    .await
                    .ok();
                templates.insert(row.template_id.clone(), t);
            }
            let (waiting_reason, eta) = self.waiting_of(&row, &counts).await?;
            views.push(BroadcastView {
                session_ids: serde_json::from_str(&row.session_ids).unwrap_or_default(),
                mapping: serde_json::from_str(&row.parameters).unwrap_or_default(),
                counts,
                template: templates.get(&row.template_id).cloned().flatten(),
                waiting_reason,
                eta,
                row,
            });
        }
        Ok((views, total))
    }

    /// A page of a campaign's recipients after `after` (their number in the campaign).
    pub async fn broadcast_log(
        &self,
        caller: &Caller,
        id: &BroadcastId,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<RecipientView>, i64)> {
        let b = self.get_broadcast(caller, id).await?;
        let bid = id.clone();
        let limit = limit.clamp(1, MAX_PAGE);
        let window = self.settings().broadcasts.reply_window.as_millis() as i64;
        let rows = self
            .db()
            .run(move |c| store::log(c, &bid, after.max(0), limit, window))
            .await?;
        let now = now_ms();
        let total = b.row.recipients_total;
        let views = rows
            .into_iter()
            .map(|r| {
                let held = (r.state == CREATED && r.available_at > now)
                    .then(|| r.held_reason.clone())
                    .flatten();
                let status = match status_of(&r.state, r.m_status.as_deref(), held.is_some()) {
                    "sent" | "delivered" | "read" if r.replied => "replied",
                    other => other,
                };
                RecipientView {
                    status,
                    session_id: b
                        .session_ids
                        .get(r.session_slot as usize)
                        .cloned()
                        .unwrap_or_default(),
                    seq: r.seq,
                    phone: r.phone,
                    full_name: r.full_name,
                    message_id: r.message_id,
                    wa_message_id: r.wa_message_id,
                    error_code: r.error_code.or(r.m_error_code),
                    error_message: r.error_message.or(r.m_error_message),
                    held,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                    sent_at: r.sent_at,
                    delivered_at: r.delivered_at,
                    read_at: r.read_at,
                    failed_at: r.failed_at,
                }
            })
            .collect();
        Ok((views, total))
    }

    /// Pause (scheduled or running), resume (paused: running, or scheduled when its time is
    /// still ahead) or cancel (not yet completed: its undispatched recipients are cancelled;
    /// messages already queued still go out).
    pub async fn change_broadcast(
        &self,
        caller: &Caller,
        id: &BroadcastId,
        action: BroadcastAction,
    ) -> Result<BroadcastView> {
        no_nul("broadcast id", id)?;
        let current = self.get_broadcast(caller, id).await?;
        let now = now_ms();
        let (from, to): (&[&str], &str) = match action {
            BroadcastAction::Pause => (&[SCHEDULED, RUNNING], PAUSED),
            BroadcastAction::Resume if current.row.send_at > now => (&[PAUSED], SCHEDULED),
            BroadcastAction::Resume => (&[PAUSED], RUNNING),
            BroadcastAction::Cancel => (&[SCHEDULED, RUNNING, PAUSED], CANCELLED),
        };
        let (p, bid) = (caller.project.row.id.clone(), id.clone());
        let window = self.settings().broadcasts.reply_window.as_millis() as i64;
        let moved = self
            .db()
            .run(move |c| {
                c.transaction(|c| {
                    let moved = store::transition(c, &p, &bid, from, to, now)?;
                    if let Some(row) = &moved {
                        health::user_changed(c, row, window, now)?;
                    }
                    Ok(moved)
                })
            })
            .await?;
        if moved.is_none() {
            return Err(Error::BroadcastState(format!(
                "a {} broadcast cannot be {}",
                current.row.state,
                action.done()
            )));
        }
        self.inner.broadcasts_wake.notify_one();
        self.get_broadcast(caller, id).await
    }

    /// The dispatcher, until `stop`: judges account health (about once a second), starts
    /// due campaigns, hands due recipients to the outbound queue, completes campaigns with
    /// nothing left to hand over.
    pub async fn run_broadcasts(&self, mut stop: watch::Receiver<bool>) {
        let every = self.settings().broadcast_health.sweep_every;
        let mut swept = tokio::time::Instant::now() - every;
        loop {
            if swept.elapsed() >= every {
                swept = tokio::time::Instant::now();
                if let Err(e) = self.sweep_health().await {
                    tracing::warn!(error = %e, "health sweep failed");
                }
            }
            let busy = match self.dispatch_round().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "broadcast dispatch round failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = self.inner.broadcasts_wake.notified() => {}
                _ = tokio::time::sleep(POLL.min(every)) => {}
            }
        }
    }

    /// One round: returns how many recipients it handled.
    async fn dispatch_round(&self) -> Result<usize> {
        let node = self.node_id().to_owned();
        let now = now_ms();
        let window = self.settings().broadcasts.reply_window.as_millis() as i64;
        let claimed = self
            .db()
            .run(move |c| {
                // Each start and completion with its `broadcast.status` event.
                c.transaction(|c| {
                    for id in store::start_due(c, now)? {
                        health::record_status(c, &id, Some("scheduled time reached"), window, now)?;
                    }
                    Ok(())
                })?;
                let claimed = store::claim(c, &node, CLAIM_BATCH, CLAIM_LEASE_MS, now)?;
                if claimed.is_empty() {
                    c.transaction(|c| {
                        for id in store::complete_finished(c, now)? {
                            health::record_status(c, &id, None, window, now)?;
                        }
                        Ok(())
                    })?;
                }
                Ok(claimed)
            })
            .await?;
        let n = claimed.len();
        let unhealthy = if n > 0 {
            self.unhealthy_sessions().await?
        } else {
            Default::default()
        };
        let mut campaigns: HashMap<String, Option<Arc<Campaign>>> = HashMap::new();
        let mut work = Vec::with_capacity(n);
        for r in claimed {
            if !campaigns.contains_key(&r.broadcast_id) {
                let c = self.campaign(&r.broadcast_id).await?;
                campaigns.insert(r.broadcast_id.clone(), c.map(Arc::new));
            }
            let Some(Some(c)) = campaigns.get(&r.broadcast_id).cloned() else {
                continue;
            };
            let Some(r) = self
                .route_around_unhealthy(&c.sessions, r, &unhealthy)
                .await?
            else {
                continue;
            };
            work.push((c, r));
        }
        // Recipients are independent (each has its own key, pacing slots are taken in the
        // database), so a round overlaps their round trips and the accept writer batches
        // their messages into shared commits.
        let mut outcomes = futures::stream::iter(work)
            .map(|(c, r)| async move { self.dispatch_one(&c, r).await })
            .buffer_unordered(DISPATCH_CONCURRENCY);
        while let Some(outcome) = outcomes.next().await {
            outcome?;
        }
        Ok(n)
    }

    /// What the dispatcher needs of a campaign, loaded once per round.
    async fn campaign(&self, id: &str) -> Result<Option<Campaign>> {
        let bid = id.to_owned();
        let Some(row) = self.db().run(move |c| store::get_any(c, &bid)).await? else {
            return Ok(None);
        };
        let caller = self.caller_for_project(&row.project_id).await?;
        let template = self
            .get_template(&caller, &TemplateId::from(row.template_id.as_str()))
            .await
            .ok();
        let mut sessions = Vec::new();
        for s in serde_json::from_str::<Vec<String>>(&row.session_ids).unwrap_or_default() {
            let sid = SessionId::from(s.as_str());
            let found = self
                .db()
                .run(move |c| crate::storage::sessions::get(c, &sid))
                .await?;
            sessions.push(found.map(|s| (s.id, s.code)));
        }
        let policy = self.policy_of(&row.project_id).await?;
        Ok(Some(Campaign {
            policy,
            mapping: serde_json::from_str(&row.parameters).unwrap_or_default(),
            from_columns: row.kind == "contact_list",
            template,
            sessions,
            caller,
            row,
        }))
    }

    /// A pacing slot of the session for one campaign message: the project's policy with the
    /// campaign's own gap, and its own daily cap under the project's.
    async fn campaign_slot(
        &self,
        c: &Campaign,
        device_id: &SessionId,
        phone: &str,
        text: &str,
        now: i64,
    ) -> Result<Decision> {
        let policy = c.policy.clone();
        let (device, phone) = (device_id.to_string(), phone.to_owned());
        let chars = text.chars().count();
        // The project's daily cap as it is now is a ceiling for every campaign.
        let daily_cap = match (c.row.daily_cap, policy.daily_cap) {
            (0, project) => project,
            (own, 0) => own,
            (own, project) => own.min(project),
        };
        let (min_gap_ms, max_gap_ms) = (c.row.pacing_min_ms, c.row.pacing_max_ms);
        self.db()
            .run(move |db| {
                let req = SlotRequest {
                    min_gap_ms,
                    max_gap_ms,
                    daily_cap,
                    ..SlotRequest::new(&policy, &device, &phone, chars)
                };
                take_slot(db, &policy, req, now)
            })
            .await
    }

    async fn dispatch_one(&self, c: &Campaign, r: store::Claimed) -> Result<()> {
        let node = self.node_id().to_owned();
        let now = now_ms();
        let (bid, seq) = (r.broadcast_id.clone(), r.seq);
        let fail = |code: &'static str, message: String| {
            let (bid, node) = (bid.clone(), node.clone());
            async move {
                self.db()
                    .run(move |db| store::mark_failed(db, &bid, seq, &node, code, &message, now))
                    .await
                    .map(drop)
            }
        };
        let project = c.caller.project.row.id.clone();
        let phone = r.phone.clone();
        if self
            .db()
            .run(move |db| suppressions::is_suppressed(db, &project, &phone))
            .await?
        {
            return fail(
                "OPTED_OUT",
                "the number opted out (suppression list)".into(),
            )
            .await;
        }
        let Some(template) = &c.template else {
            return fail("TEMPLATE_NOT_FOUND", "the template was deleted".into()).await;
        };
        let Some(variant) = pick(&template.variants, &c.row.language) else {
            return fail("TEMPLATE_NOT_FOUND", "the template has no variants".into()).await;
        };
        let Some(Some((device_id, device_code))) = c.sessions.get(r.session_slot as usize).cloned()
        else {
            return fail("SESSION_NOT_FOUND", "the session was deleted".into()).await;
        };
        if c.mapping.skip_unregistered {
            let gate = self
                .number_gate(
                    &c.caller.project.row.id,
                    device_id.as_str(),
                    &c.row.id,
                    r.seq,
                    &r.phone,
                )
                .await?;
            match gate {
                NumberGate::Send => {}
                NumberGate::Skip => {
                    return fail("NOT_ON_WHATSAPP", "the number is not on WhatsApp".into()).await;
                }
                NumberGate::Hold { until, reason } => {
                    let (bid, node) = (bid.clone(), node.clone());
                    return self
                        .db()
                        .run(move |db| store::hold(db, &bid, seq, &node, &reason, until, now))
                        .await
                        .map(drop);
                }
            }
        }
        let vars: Map<String, Value> = serde_json::from_str(&r.variables).unwrap_or_default();
        let params = values_for(&c.mapping, c.from_columns, &r.phone, &r.full_name, &vars);
        let rendered = match render(variant, &params) {
            Ok(m) => m,
            Err(e) => return fail("TEMPLATE_RENDER_FAILED", e.public_message()).await,
        };
        // A media header: the campaign's one stored file (see `media.rs`), or wait for it.
        let media = match rendered
            .media
            .as_ref()
            .filter(|m| m.format != HeaderFormat::Text)
        {
            None => None,
            Some(header) => {
                match self
                    .header_media(&c.row.id, &c.caller.project.row.id, header)
                    .await?
                {
                    HeaderMedia::Ready { media_id, kind } => Some((media_id, kind)),
                    HeaderMedia::Failed { code, message } => return fail(code, message).await,
                    HeaderMedia::Wait { until, reason } => {
                        return self
                            .db()
                            .run(move |db| store::hold(db, &bid, seq, &node, &reason, until, now))
                            .await
                            .map(drop);
                    }
                }
            }
        };
        // Pacing: a slot of this session now, or wait for it (held, with why). The rest of
        // this campaign's recipients on the session wait too, each at least one minimal gap
        // after the one before it: without that they would all come due at the slot
        // together, and every slot would claim and hold the whole lane again.
        if let Decision::Hold { until, reason } = self
            .campaign_slot(c, &device_id, &r.phone, &rendered.text, now)
            .await?
        {
            let lane = store::Lane {
                slot: r.session_slot,
                stride: c.sessions.len().max(1) as i64,
                step_ms: c.row.pacing_min_ms.max(MIN_LANE_STEP_MS),
            };
            return self
                .db()
                .run_relaxed(move |db| {
                    store::hold_lane(db, &bid, seq, &node, &lane, &reason, until, now)
                })
                .await
                .map(drop);
        }
        let s = self.settings();
        let project = &c.caller.project.row;
        let key = format!("broadcast:{}:{}", c.row.id, r.seq);
        let item = AcceptItem {
            limits: Limits {
                project_id: project.id.clone(),
                per_minute: project.rate_limit_per_minute,
                monthly: project.monthly_quota,
                suspended: project.suspended,
            },
            idempotency: Some(IdempotencyKey {
                fingerprint: crate::crypto::sha256_hex(key.as_bytes()),
                key,
                ttl_ms: 30 * 24 * 3600 * 1000,
            }),
            message: NewMessage {
                id: uuid::Uuid::now_v7().to_string(),
                project_id: project.id.clone(),
                device_id: device_id.clone(),
                device_code,
                recipient: r.phone.clone(),
                kind: media.as_ref().map_or("text", |m| m.1.as_str()).into(),
                body: Some(rendered.text).filter(|t| !t.is_empty()),
                media_id: media.map(|m| m.0),
                payload: Some(
                    serde_json::json!({"broadcast_id": c.row.id.as_str(), "broadcast_recipient": r.seq})
                        .to_string(),
                ),
                status: MessageStatus::Queued,
                max_attempts: s.max_attempts,
                available_at: now,
                created_at: now,
                expires_at: now + s.message_ttl.as_millis() as i64,
            },
            media: None,
        };
        match self.inner.writer.submit(item).await {
            Ok(accepted) => {
                let message_id = accepted.id().to_owned();
                if matches!(accepted, Accepted::Created { .. }) {
                    self.sessions().notify_outbound(&device_id);
                }
                self.db()
                    .run_relaxed(move |db| {
                        store::mark_enqueued(db, &bid, seq, &node, &message_id, now)
                    })
                    .await
                    .map(drop)
            }
            Err(Error::RateLimited { retry_after, .. }) => {
                let until = now + (retry_after.as_millis() as i64).max(MIN_HOLD_MS);
                self.db()
                    .run(move |db| {
                        store::hold(db, &bid, seq, &node, "the project's rate limit", until, now)
                    })
                    .await
                    .map(drop)
            }
            Err(e) if e.kind().is_server_side() => Err(e),
            Err(e) => fail(e.code(), e.public_message()).await,
        }
    }
}

/// A campaign as the dispatcher uses it.
struct Campaign {
    row: BroadcastRow,
    /// The project's send policy (the campaign's gap and cap override it).
    policy: Policy,
    caller: Caller,
    mapping: Mapping,
    from_columns: bool,
    template: Option<TemplateView>,
    /// By slot: the session's id and device code, if it still exists.
    sessions: Vec<Option<(SessionId, String)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastAction {
    Pause,
    Resume,
    Cancel,
}

impl BroadcastAction {
    fn done(self) -> &'static str {
        match self {
            BroadcastAction::Pause => "paused",
            BroadcastAction::Resume => "resumed",
            BroadcastAction::Cancel => "cancelled",
        }
    }
}

/// Campaign states a caller may see: scheduled, running, paused, completed, cancelled.
pub fn is_final(state: &str) -> bool {
    state == COMPLETED || state == CANCELLED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_status_follows_its_message() {
        assert_eq!(status_of("created", None, false), "created");
        assert_eq!(status_of("created", None, true), "pending");
        assert_eq!(status_of("enqueued", Some("queued"), false), "pending");
        assert_eq!(status_of("enqueued", Some("delivered"), false), "delivered");
        assert_eq!(status_of("enqueued", Some("failed"), false), "failed");
        assert_eq!(status_of("failed", None, false), "failed");
        assert_eq!(status_of("cancelled", None, false), "cancelled");
    }

    #[test]
    fn list_values_come_from_columns() {
        let m = Mapping {
            body: vec!["full_name".into(), "city".into(), "missing".into()],
            ..Mapping::default()
        };
        let vars: Map<String, Value> = serde_json::from_str(r#"{"city":"Bandung"}"#).unwrap();
        let p = values_for(&m, true, "62811", "Ana", &vars);
        assert_eq!(p.body, vec!["Ana", "Bandung", ""]);
        let p = values_for(&m, false, "62811", "Ana", &vars);
        assert_eq!(p.body, m.body);
    }
}
