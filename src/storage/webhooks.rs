//! Webhook registrations, the delivery outbox's lanes and leases, and the delivery log. The
//! outbox rows themselves are written by `events::record`, in the transaction of the change
//! they report; everything after that — leasing a lane to one node, recording attempts,
//! retries, redelivery — is here.

use diesel::dsl::{exists, not};
use diesel::prelude::*;

use super::DbConn;
use super::events::{DEAD, FAILED, PENDING};
use super::schema::{events, webhook_attempts, webhook_deliveries, webhook_lanes, webhooks};
use crate::db_run;
use crate::error::Result;
use crate::values::{ProjectId, SessionId, WebhookId};

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = webhooks)]
pub struct WebhookRow {
    pub id: WebhookId,
    pub project_id: ProjectId,
    pub device_id: Option<SessionId>,
    pub url: String,
    pub events: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret_enc: String,
    pub previous_secret_enc: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn insert(conn: &mut DbConn, row: &WebhookRow) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(webhooks::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// A project's webhooks; with `device_id`, that session's and the project-wide ones.
pub fn list(
    conn: &mut DbConn,
    project_id: &ProjectId,
    device_id: Option<&SessionId>,
) -> Result<Vec<WebhookRow>> {
    Ok(db_run!(conn, |c| {
        let mut q = webhooks::table
            .filter(webhooks::project_id.eq(project_id.to_owned()))
            .order(webhooks::created_at.asc())
            .select(WebhookRow::as_select())
            .into_boxed();
        if let Some(d) = device_id {
            q = q.filter(
                webhooks::device_id
                    .is_null()
                    .or(webhooks::device_id.eq(d.to_owned())),
            );
        }
        q.load(c)
    })?)
}

pub fn get(
    conn: &mut DbConn,
    project_id: &ProjectId,
    id: &WebhookId,
) -> Result<Option<WebhookRow>> {
    Ok(db_run!(conn, |c| webhooks::table
        .filter(webhooks::id.eq(id))
        .filter(webhooks::project_id.eq(project_id))
        .select(WebhookRow::as_select())
        .first(c)
        .optional())?)
}

/// For the dispatcher, which acts for every project.
pub fn get_any(conn: &mut DbConn, id: &WebhookId) -> Result<Option<WebhookRow>> {
    Ok(db_run!(conn, |c| webhooks::table
        .find(id)
        .select(WebhookRow::as_select())
        .first(c)
        .optional())?)
}

#[derive(Debug, Default)]
pub struct Changes {
    pub url: Option<String>,
    pub events: Option<String>,
    pub enabled: Option<bool>,
}

pub fn update(
    conn: &mut DbConn,
    project_id: &ProjectId,
    id: &WebhookId,
    ch: Changes,
    now: i64,
) -> Result<Option<WebhookRow>> {
    conn.transaction(|conn| {
        let Some(mut row) = get(conn, project_id, id)? else {
            return Ok(None);
        };
        if let Some(url) = ch.url {
            row.url = url;
        }
        if let Some(events) = ch.events {
            row.events = events;
        }
        if let Some(enabled) = ch.enabled {
            if enabled && !row.enabled {
                row.disabled_reason = None;
            }
            row.enabled = enabled;
        }
        row.updated_at = now;
        db_run!(conn, |c| diesel::update(webhooks::table.find(id))
            .set((
                webhooks::url.eq(&row.url),
                webhooks::events.eq(&row.events),
                webhooks::enabled.eq(row.enabled),
                webhooks::disabled_reason.eq(&row.disabled_reason),
                webhooks::updated_at.eq(now),
            ))
            .execute(c))?;
        Ok(Some(row))
    })
}

pub fn delete(conn: &mut DbConn, project_id: &ProjectId, id: &WebhookId) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::delete(
        webhooks::table
            .filter(webhooks::id.eq(id))
            .filter(webhooks::project_id.eq(project_id)),
    )
    .execute(c))?
        == 1)
}

pub fn set_secrets(
    conn: &mut DbConn,
    id: &WebhookId,
    secret_enc: &str,
    previous: Option<(&str, i64)>,
    now: i64,
) -> Result<()> {
    db_run!(conn, |c| diesel::update(webhooks::table.find(id))
        .set((
            webhooks::secret_enc.eq(secret_enc),
            webhooks::previous_secret_enc.eq(previous.map(|p| p.0)),
            webhooks::previous_secret_expires_at.eq(previous.map(|p| p.1)),
            webhooks::updated_at.eq(now),
        ))
        .execute(c))?;
    Ok(())
}

/// The receiver asked us to stop (410 Gone): no more deliveries, the open ones go dead.
pub fn disable(conn: &mut DbConn, id: &WebhookId, reason: &str, now: i64) -> Result<()> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(webhooks::table.find(id))
            .set((
                webhooks::enabled.eq(false),
                webhooks::disabled_reason.eq(reason),
                webhooks::updated_at.eq(now),
            ))
            .execute(c))?;
        db_run!(conn, |c| diesel::update(
            webhook_deliveries::table
                .filter(webhook_deliveries::webhook_id.eq(id))
                .filter(is_open()),
        )
        .set((
            webhook_deliveries::state.eq(DEAD),
            webhook_deliveries::last_error.eq(reason),
            webhook_deliveries::updated_at.eq(now),
            webhook_deliveries::completed_at.eq(now),
        ))
        .execute(c))?;
        Ok(())
    })
}

// --- the dispatcher's side ---

/// "Open" written out literally: the outbox indexes are partial (`WHERE state IN ('pending',
/// 'failed')`), and a planner can only prove a query fits such an index from literal values,
/// not from bound parameters — with `eq_any(OPEN)` every scan would read the whole history.
fn is_open() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql::<diesel::sql_types::Bool>("webhook_deliveries.state IN ('pending', 'failed')")
}

/// A delivery lane: one webhook's deliveries of one session, delivered one after another in
/// the order their events were recorded. Leased to one node at a time.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Lane {
    pub webhook_id: WebhookId,
    /// The session whose events the lane carries; empty for project-wide events.
    pub key: String,
}

/// Lanes with a due delivery that nobody holds and that are not waiting for a retry.
pub fn due_lanes(conn: &mut DbConn, now: i64, limit: i64) -> Result<Vec<Lane>> {
    let busy = webhook_lanes::table
        .filter(webhook_lanes::webhook_id.eq(webhook_deliveries::webhook_id))
        .filter(webhook_lanes::lane.eq(webhook_deliveries::lane))
        .filter(
            webhook_lanes::lease_until
                .gt(now)
                .or(webhook_lanes::blocked_until.gt(now)),
        );
    Ok(db_run!(conn, |c| webhook_deliveries::table
        .filter(is_open())
        .filter(webhook_deliveries::next_attempt_at.le(now))
        .filter(not(exists(busy)))
        .select((webhook_deliveries::webhook_id, webhook_deliveries::lane))
        .distinct()
        .limit(limit)
        .load(c))?)
}

/// Takes a lane for `owner` until `until`, unless another holder's lease is still valid or
/// the lane waits for a retry. Safe across nodes: the upsert is atomic.
pub fn lease_lane(
    conn: &mut DbConn,
    lane: &Lane,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<bool> {
    let (webhook_id, lane) = (&lane.webhook_id, lane.key.as_str());
    let inserted = db_run!(conn, |c| diesel::insert_into(webhook_lanes::table)
        .values((
            webhook_lanes::webhook_id.eq(webhook_id),
            webhook_lanes::lane.eq(lane),
            webhook_lanes::owner.eq(owner),
            webhook_lanes::lease_until.eq(until),
            webhook_lanes::blocked_until.eq(0),
        ))
        .on_conflict_do_nothing()
        .execute(c))?;
    if inserted == 1 {
        return Ok(true);
    }
    let taken = db_run!(conn, |c| diesel::update(
        webhook_lanes::table
            .filter(webhook_lanes::webhook_id.eq(webhook_id))
            .filter(webhook_lanes::lane.eq(lane))
            .filter(webhook_lanes::lease_until.le(now))
            .filter(webhook_lanes::blocked_until.le(now)),
    )
    .set((
        webhook_lanes::owner.eq(owner),
        webhook_lanes::lease_until.eq(until)
    ))
    .execute(c))?;
    Ok(taken == 1)
}

/// At start: lanes this node held when it stopped (or died) are free again at once, not
/// only when their leases run out.
pub fn release_all(conn: &mut DbConn, owner: &str) -> Result<usize> {
    Ok(db_run!(conn, |c| diesel::update(
        webhook_lanes::table.filter(webhook_lanes::owner.eq(owner))
    )
    .set((
        webhook_lanes::owner.eq(None::<String>),
        webhook_lanes::lease_until.eq(0)
    ))
    .execute(c))?)
}

/// Gives a lane back; `blocked_until` holds it while its head waits for a retry — and its
/// other open deliveries are moved to that time too, since none may go before the head.
pub fn release_lane(conn: &mut DbConn, lane: &Lane, owner: &str, blocked_until: i64) -> Result<()> {
    let (webhook_id, lane) = (&lane.webhook_id, lane.key.as_str());
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(
            webhook_lanes::table
                .filter(webhook_lanes::webhook_id.eq(webhook_id))
                .filter(webhook_lanes::lane.eq(lane))
                .filter(webhook_lanes::owner.eq(owner)),
        )
        .set((
            webhook_lanes::owner.eq(None::<String>),
            webhook_lanes::lease_until.eq(0),
            webhook_lanes::blocked_until.eq(blocked_until),
        ))
        .execute(c))?;
        if blocked_until > 0 {
            db_run!(conn, |c| diesel::update(
                webhook_deliveries::table
                    .filter(webhook_deliveries::webhook_id.eq(webhook_id))
                    .filter(webhook_deliveries::lane.eq(lane))
                    .filter(is_open())
                    .filter(webhook_deliveries::next_attempt_at.lt(blocked_until)),
            )
            .set(webhook_deliveries::next_attempt_at.eq(blocked_until))
            .execute(c))?;
        }
        Ok(())
    })
}

/// A delivery to attempt, with its event's stored payload.
#[derive(Debug, Clone, Queryable)]
pub struct Job {
    pub delivery_id: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub event_id: String,
    pub kind: String,
    pub data: String,
}

/// The open deliveries of a lane in order (the lane's head first).
pub fn lane_jobs(conn: &mut DbConn, lane: &Lane, limit: i64) -> Result<Vec<Job>> {
    let (webhook_id, lane) = (&lane.webhook_id, lane.key.as_str());
    Ok(db_run!(conn, |c| webhook_deliveries::table
        .inner_join(events::table.on(events::id.eq(webhook_deliveries::event_id)))
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .filter(webhook_deliveries::lane.eq(lane))
        .filter(is_open())
        .order(webhook_deliveries::seq.asc())
        .limit(limit)
        .select((
            webhook_deliveries::id,
            webhook_deliveries::attempts,
            webhook_deliveries::next_attempt_at,
            webhook_deliveries::created_at,
            events::id,
            events::kind,
            events::data,
        ))
        .load(c))?)
}

/// The result of one attempt and what becomes of the delivery.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: String,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub at: i64,
    /// `succeeded`, `failed` (retry at `next_attempt_at`) or `dead`.
    pub state: &'static str,
    pub attempts: i32,
    pub next_attempt_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = webhook_attempts)]
struct NewAttempt<'a> {
    delivery_id: &'a str,
    status_code: Option<i32>,
    latency_ms: i64,
    error: Option<&'a str>,
    at: i64,
}

/// Writes a batch of attempts and the deliveries' new states in one transaction.
pub fn record_outcomes(conn: &mut DbConn, outcomes: &[Outcome]) -> Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    conn.transaction(|conn| {
        let attempts: Vec<NewAttempt> = outcomes
            .iter()
            .map(|o| NewAttempt {
                delivery_id: &o.delivery_id,
                status_code: o.status_code,
                latency_ms: o.latency_ms,
                error: o.error.as_deref(),
                at: o.at,
            })
            .collect();
        db_run!(conn, |c| diesel::insert_into(webhook_attempts::table)
            .values(&attempts)
            .execute(c))?;
        for o in outcomes {
            let done = (o.state != FAILED).then_some(o.at);
            // Only an open delivery changes: a 410 may have closed it meanwhile.
            db_run!(conn, |c| diesel::update(
                webhook_deliveries::table
                    .filter(webhook_deliveries::id.eq(&o.delivery_id))
                    .filter(is_open()),
            )
            .set((
                webhook_deliveries::state.eq(o.state),
                webhook_deliveries::attempts.eq(o.attempts),
                webhook_deliveries::next_attempt_at.eq(o.next_attempt_at),
                webhook_deliveries::last_status_code.eq(o.status_code),
                webhook_deliveries::last_error.eq(o.error.as_deref()),
                webhook_deliveries::updated_at.eq(o.at),
                webhook_deliveries::completed_at.eq(done),
            ))
            .execute(c))?;
        }
        Ok(())
    })
}

// --- the delivery log ---

#[derive(Debug, Clone, Queryable)]
pub struct DeliveryRow {
    pub seq: i64,
    pub id: String,
    pub event_id: String,
    pub kind: String,
    pub state: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub at: i64,
}

/// The delivery log's rows: each delivery with its event's kind.
macro_rules! delivery_log {
    () => {
        webhook_deliveries::table
            .inner_join(events::table.on(events::id.eq(webhook_deliveries::event_id)))
            .select((
                webhook_deliveries::seq,
                webhook_deliveries::id,
                webhook_deliveries::event_id,
                events::kind,
                webhook_deliveries::state,
                webhook_deliveries::created_at,
            ))
    };
}

/// A webhook's deliveries, newest first, before `before_seq` when paging.
pub fn deliveries(
    conn: &mut DbConn,
    webhook_id: &WebhookId,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    Ok(db_run!(conn, |c| delivery_log!()
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .filter(webhook_deliveries::seq.lt(before_seq.unwrap_or(i64::MAX)))
        .order(webhook_deliveries::seq.desc())
        .limit(limit)
        .load(c))?)
}

pub fn delivery(
    conn: &mut DbConn,
    webhook_id: &WebhookId,
    id: &str,
) -> Result<Option<DeliveryRow>> {
    Ok(db_run!(conn, |c| delivery_log!()
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .filter(webhook_deliveries::id.eq(id))
        .first(c)
        .optional())?)
}

pub fn attempts(conn: &mut DbConn, delivery_ids: &[String]) -> Result<Vec<AttemptRow>> {
    Ok(db_run!(conn, |c| webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq_any(delivery_ids))
        .order(webhook_attempts::seq.asc())
        .select((
            webhook_attempts::delivery_id,
            webhook_attempts::status_code,
            webhook_attempts::latency_ms,
            webhook_attempts::error,
            webhook_attempts::at,
        ))
        .load(c))?)
}

/// Puts deliveries back in their lanes as due now, with a fresh attempt budget.
macro_rules! requeue {
    ($conn:expr, $webhook_id:expr, $filter:expr, $now:expr) => {{
        let n = db_run!($conn, |c| diesel::update(
            webhook_deliveries::table
                .filter(webhook_deliveries::webhook_id.eq($webhook_id))
                .filter($filter),
        )
        .set((
            webhook_deliveries::state.eq(PENDING),
            webhook_deliveries::attempts.eq(0),
            webhook_deliveries::next_attempt_at.eq($now),
            webhook_deliveries::completed_at.eq(None::<i64>),
            webhook_deliveries::updated_at.eq($now),
        ))
        .execute(c))?;
        // A lane waiting for a retry must not keep waiting for what is due now, nor keep
        // back the never-attempted deliveries it had postponed.
        db_run!($conn, |c| diesel::update(
            webhook_lanes::table.filter(webhook_lanes::webhook_id.eq($webhook_id)),
        )
        .set(webhook_lanes::blocked_until.eq(0))
        .execute(c))?;
        db_run!($conn, |c| diesel::update(
            webhook_deliveries::table
                .filter(webhook_deliveries::webhook_id.eq($webhook_id))
                .filter(webhook_deliveries::state.eq(PENDING))
                .filter(webhook_deliveries::next_attempt_at.gt($now)),
        )
        .set(webhook_deliveries::next_attempt_at.eq($now))
        .execute(c))?;
        super::note_event_written();
        n
    }};
}

pub fn redeliver(conn: &mut DbConn, webhook_id: &WebhookId, id: &str, now: i64) -> Result<bool> {
    conn.transaction(|conn| Ok(requeue!(conn, webhook_id, webhook_deliveries::id.eq(id), now) == 1))
}

/// Everything of this webhook that failed (retrying or dead) since `since`.
pub fn redeliver_failed(
    conn: &mut DbConn,
    webhook_id: &WebhookId,
    since: i64,
    now: i64,
) -> Result<usize> {
    conn.transaction(|conn| {
        Ok(requeue!(
            conn,
            webhook_id,
            webhook_deliveries::state
                .eq_any([FAILED, DEAD])
                .and(webhook_deliveries::created_at.ge(since)),
            now
        ))
    })
}

/// Open deliveries, for metrics.
pub fn open_count(conn: &mut DbConn) -> Result<i64> {
    Ok(db_run!(conn, |c| webhook_deliveries::table
        .filter(is_open())
        .count()
        .get_result(c))?)
}
