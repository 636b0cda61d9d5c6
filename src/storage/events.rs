//! The event log and its outbox. [`record`] runs inside the transaction of the change that
//! caused the event: the event row and one delivery row per matching webhook commit with the
//! change or not at all, so no event is lost and none is invented.

use diesel::dsl::{exists, not};
use diesel::prelude::*;
use serde_json::Value;

use super::DbConn;
use super::schema::{devices, events, messages, webhook_deliveries, webhook_lanes, webhooks};
use crate::db_run;
use crate::error::Result;
use crate::events::{self as ev, NewEvent};
use crate::values::{MessageStatus, ProjectId, SessionId, WebhookId};

/// Delivery states. `failed` has a retry scheduled; `dead` gets no more attempts.
pub const PENDING: &str = "pending";
pub const FAILED: &str = "failed";
pub const SUCCEEDED: &str = "succeeded";
pub const DEAD: &str = "dead";
pub const OPEN: [&str; 2] = [PENDING, FAILED];

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub seq: i64,
    pub txid: i64,
    pub id: String,
    pub project_id: ProjectId,
    pub device_id: Option<SessionId>,
    pub kind: String,
    pub data: String,
    pub created_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = events)]
struct NewEventRow<'a> {
    id: &'a str,
    project_id: &'a str,
    device_id: Option<&'a str>,
    kind: &'a str,
    data: &'a str,
    created_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = webhook_deliveries)]
pub(crate) struct NewDelivery {
    pub id: String,
    pub webhook_id: WebhookId,
    pub event_id: String,
    pub lane: String,
    pub state: &'static str,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a `message.status` event tells of a message.
#[derive(Queryable, Selectable)]
#[diesel(table_name = messages)]
struct StatusRow {
    id: String,
    project_id: ProjectId,
    device_id: SessionId,
    device_code: String,
    recipient: String,
    status: MessageStatus,
    payload: Option<String>,
    wa_message_id: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
}

/// Which webhooks receive an event.
pub enum Fanout<'a> {
    /// Every enabled webhook of the project (or of the event's session) whose filter matches.
    Subscribers,
    /// Exactly these (a test delivery), whatever their filter.
    Only(&'a [WebhookId]),
}

/// Records an event and queues its deliveries; call inside the change's transaction.
/// Returns the event id.
pub fn record(conn: &mut DbConn, e: NewEvent, now: i64) -> Result<String> {
    Ok(record_to(conn, e, Fanout::Subscribers, now)?.event_id)
}

/// An event just recorded and the deliveries queued for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub event_id: String,
    pub delivery_ids: Vec<String>,
}

/// An enabled webhook, as the fan-out sees it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = webhooks)]
struct Hook {
    id: WebhookId,
    /// The one session it is for, or none for the whole project.
    device_id: Option<SessionId>,
    /// Its filter: `*` or event names.
    events: String,
}

fn enabled_hooks(conn: &mut DbConn, project_id: &ProjectId) -> Result<Vec<Hook>> {
    Ok(db_run!(conn, |c| webhooks::table
        .filter(webhooks::project_id.eq(project_id))
        .filter(webhooks::enabled.eq(true))
        .select(Hook::as_select())
        .load(c))?)
}

/// Records an event for `fanout`.
pub fn record_to(conn: &mut DbConn, e: NewEvent, fanout: Fanout<'_>, now: i64) -> Result<Recorded> {
    let hooks = enabled_hooks(conn, &e.project_id)?;
    record_with(conn, e, &hooks, fanout, now)
}

/// [`record_to`] with the project's webhooks already loaded (several events of one change).
fn record_with(
    conn: &mut DbConn,
    e: NewEvent,
    hooks: &[Hook],
    fanout: Fanout<'_>,
    now: i64,
) -> Result<Recorded> {
    let id = uuid::Uuid::now_v7().to_string();
    let data = ev::envelope(&id, e.kind, e.device_id.as_deref(), now, e.fields).to_string();
    db_run!(conn, |c| diesel::insert_into(events::table)
        .values(NewEventRow {
            id: &id,
            project_id: &e.project_id,
            device_id: e.device_id.as_deref(),
            kind: e.kind,
            data: &data,
            created_at: now,
        })
        .execute(c))?;
    let lane = e.device_id.clone().map(String::from).unwrap_or_default();
    let mut rows: Vec<NewDelivery> = hooks
        .iter()
        .filter(|hook| match fanout {
            Fanout::Subscribers => {
                hook.device_id
                    .as_ref()
                    .is_none_or(|d| Some(d) == e.device_id.as_ref())
                    && ev::filter_matches(&hook.events, e.kind)
            }
            Fanout::Only(ids) => ids.contains(&hook.id),
        })
        .map(|hook| NewDelivery {
            id: uuid::Uuid::now_v7().to_string(),
            webhook_id: hook.id.clone(),
            event_id: id.clone(),
            lane: lane.clone(),
            state: PENDING,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
        })
        .collect();
    if !rows.is_empty() {
        // A lane waiting for its head's retry: the new delivery is not due before that
        // either, so the dispatcher's scan for due work never wades through a blocked backlog.
        let ids: Vec<&WebhookId> = rows.iter().map(|r| &r.webhook_id).collect();
        let blocked: Vec<(WebhookId, i64)> = db_run!(conn, |c| webhook_lanes::table
            .filter(webhook_lanes::webhook_id.eq_any(&ids))
            .filter(webhook_lanes::lane.eq(&lane))
            .filter(webhook_lanes::blocked_until.gt(now))
            .select((webhook_lanes::webhook_id, webhook_lanes::blocked_until))
            .load(c))?;
        for r in rows.iter_mut() {
            if let Some((_, until)) = blocked.iter().find(|(w, _)| *w == r.webhook_id) {
                r.next_attempt_at = *until;
            }
        }
        db_run!(conn, |c| diesel::insert_into(webhook_deliveries::table)
            .values(&rows)
            .execute(c))?;
    }
    super::note_event_written();
    Ok(Recorded {
        event_id: id,
        delivery_ids: rows.into_iter().map(|r| r.id).collect(),
    })
}

/// One `message.status` event for each of these outbound messages, with its current status.
pub fn message_statuses(conn: &mut DbConn, ids: &[String], now: i64) -> Result<()> {
    statuses(conn, ids, None, now)
}

/// One `message.status` event for each of these messages saying `status`: a step their
/// current status implies but that was never reported (a receipt that came before the
/// server ack implies `sent`), so a subscriber sees every step, in order.
pub fn implied_statuses(
    conn: &mut DbConn,
    ids: &[String],
    status: MessageStatus,
    now: i64,
) -> Result<()> {
    statuses(conn, ids, Some(status), now)
}

fn statuses(
    conn: &mut DbConn,
    ids: &[String],
    implied: Option<MessageStatus>,
    now: i64,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let rows: Vec<StatusRow> = db_run!(conn, |c| messages::table
        .filter(messages::id.eq_any(ids))
        .order(messages::seq.asc())
        .select(StatusRow::as_select())
        .load(c))?;
    // The webhooks are read once per project, not once per message.
    let mut hooks: Option<(ProjectId, Vec<Hook>)> = None;
    for m in rows {
        if hooks.as_ref().is_none_or(|(p, _)| *p != m.project_id) {
            hooks = Some((m.project_id.clone(), enabled_hooks(conn, &m.project_id)?));
        }
        let fields = ev::message_status(&ev::Status {
            message_id: &m.id,
            device_code: &m.device_code,
            wa_message_id: m.wa_message_id.as_deref(),
            recipient: &m.recipient,
            status: implied.unwrap_or(m.status),
            payload: m.payload.as_deref(),
            error_code: m.error_code.as_deref().filter(|_| implied.is_none()),
            error_message: m.error_message.as_deref().filter(|_| implied.is_none()),
            at_ms: now,
        });
        let e = NewEvent {
            project_id: m.project_id,
            device_id: Some(m.device_id),
            kind: ev::MESSAGE_STATUS,
            fields,
        };
        let project_hooks = &hooks.as_ref().expect("loaded above").1;
        record_with(conn, e, project_hooks, Fanout::Subscribers, now)?;
    }
    Ok(())
}

/// A `session.status` event with the session's stored account details.
pub fn session_status(
    conn: &mut DbConn,
    device_id: &SessionId,
    status: &str,
    reason: Option<&str>,
    qr: Option<&str>,
    now: i64,
) -> Result<()> {
    let row: Option<(ProjectId, Option<String>, Option<String>)> =
        db_run!(conn, |c| devices::table
            .find(device_id)
            .select((devices::project_id, devices::phone, devices::push_name))
            .first(c)
            .optional())?;
    let Some((project_id, phone, push_name)) = row else {
        return Ok(());
    };
    let fields = ev::session_status(&ev::SessionChange {
        status,
        reason,
        phone: phone.as_deref(),
        push_name: push_name.as_deref(),
        qr,
    });
    record(
        conn,
        NewEvent {
            project_id,
            device_id: Some(device_id.clone()),
            kind: ev::SESSION_STATUS,
            fields,
        },
        now,
    )?;
    Ok(())
}

/// A position in the event log: events are read in (txid, seq) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Queryable)]
pub struct Cursor {
    pub txid: i64,
    pub seq: i64,
}

/// The position of an event of this project, if it exists.
pub fn cursor_of(
    conn: &mut DbConn,
    project_id: &ProjectId,
    event_id: &str,
) -> Result<Option<Cursor>> {
    Ok(db_run!(conn, |c| events::table
        .filter(events::id.eq(event_id))
        .filter(events::project_id.eq(project_id))
        .select((events::txid, events::seq))
        .first(c)
        .optional())?)
}

/// Transactions below this id have all ended, so every event below it is final: a reader
/// that stops here never skips a row that commits later. (SQLite: no concurrent writers.)
fn horizon(conn: &mut DbConn) -> Result<i64> {
    match conn {
        DbConn::Sqlite(_) => Ok(i64::MAX),
        DbConn::Postgres(c) => Ok(
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            ))
            .get_result(c)?,
        ),
    }
}

/// The newest final position: a stream that starts "live" starts after it.
pub fn tail(conn: &mut DbConn, project_id: &ProjectId) -> Result<Cursor> {
    let h = horizon(conn)?;
    let last: Option<Cursor> = db_run!(conn, |c| events::table
        .filter(events::project_id.eq(project_id))
        .filter(events::txid.lt(h))
        .order((events::txid.desc(), events::seq.desc()))
        .select((events::txid, events::seq))
        .first(c)
        .optional())?;
    Ok(last.unwrap_or_default())
}

/// Events of a project (or one of its sessions) after `cursor`, oldest first.
pub fn after(
    conn: &mut DbConn,
    project_id: &ProjectId,
    device_id: Option<&SessionId>,
    cursor: Cursor,
    limit: i64,
) -> Result<Vec<EventRow>> {
    let h = horizon(conn)?;
    let Cursor { txid, seq } = cursor;
    Ok(db_run!(conn, |c| {
        let mut q = events::table
            .filter(events::project_id.eq(project_id.to_owned()))
            .filter(events::txid.lt(h))
            .filter(
                events::txid
                    .gt(txid)
                    .or(events::txid.eq(txid).and(events::seq.gt(seq))),
            )
            .order((events::txid.asc(), events::seq.asc()))
            .limit(limit)
            .select(EventRow::as_select())
            .into_boxed();
        if let Some(d) = device_id {
            q = q.filter(events::device_id.eq(d.to_owned()));
        }
        q.load(c)
    })?)
}

/// The stored payload as JSON.
pub fn data_json(row: &EventRow) -> Value {
    serde_json::from_str(&row.data).unwrap_or(Value::Null)
}

/// Forgets events older than `before` once none of their deliveries is still open, and the
/// finished deliveries with them.
pub fn purge(conn: &mut DbConn, before: i64) -> Result<usize> {
    let open = webhook_deliveries::table
        .filter(webhook_deliveries::event_id.eq(events::id))
        .filter(webhook_deliveries::state.eq_any(OPEN));
    Ok(db_run!(conn, |c| diesel::delete(
        events::table
            .filter(events::created_at.lt(before))
            .filter(not(exists(open))),
    )
    .execute(c))?)
}
