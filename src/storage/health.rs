//! Account health of the sessions campaigns send through (`session_health`), why a paused
//! campaign is paused (`broadcast_pauses`), and taking back campaign messages still waiting
//! in an unhealthy session's queue. Every change is conditioned on the stored state, so two
//! nodes judging the same session at once record one change and one event.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

use super::schema::{
    broadcast_pauses, broadcast_recipients, broadcasts, devices, idempotency_keys, messages,
    session_health,
};
use super::{DbConn, events};
use crate::db_run;
use crate::error::Result;
use crate::events::{self as ev, NewEvent};
use crate::values::{MessageStatus, ProjectId, SessionId};

pub const HEALTHY: &str = "healthy";
pub const UNHEALTHY: &str = "unhealthy";

/// Who paused a campaign.
pub const BY_USER: &str = "user";
pub const BY_HEALTH: &str = "health";

/// Error code of a campaign message taken back from an unhealthy session's queue (its
/// recipient goes to another session of the campaign).
pub const REROUTED: &str = "REROUTED";

const FAILURE_RUN: &str = include_str!("sql/campaign_failure_run.sql");
const WITHDRAWABLE: &str = include_str!("sql/campaign_withdrawable.sql");

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = session_health)]
pub struct HealthRow {
    pub device_id: SessionId,
    pub project_id: ProjectId,
    pub health: String,
    pub reason: Option<String>,
    pub since: i64,
    pub down_since: Option<i64>,
    pub scan_from: i64,
    pub updated_at: i64,
}

/// What health is judged from: the session's state as its supervisor stored it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = devices)]
pub struct DeviceState {
    pub id: SessionId,
    pub project_id: ProjectId,
    pub name: String,
    pub state: String,
    pub state_reason: Option<String>,
    pub last_connected_at: Option<i64>,
}

/// A campaign the health sweep looks after (scheduled, running or paused).
#[derive(Debug, Clone, Queryable)]
pub struct Watched {
    pub id: String,
    pub project_id: ProjectId,
    pub state: String,
    pub session_ids: String,
    pub send_at: i64,
}

/// Campaigns not yet finished, at most `limit`.
pub fn watched(conn: &mut DbConn, limit: i64) -> Result<Vec<Watched>> {
    Ok(db_run!(conn, |c| broadcasts::table
        .filter(broadcasts::state.eq_any(["scheduled", "running", "paused"]))
        .order(broadcasts::created_at.asc())
        .limit(limit)
        .select((
            broadcasts::id,
            broadcasts::project_id,
            broadcasts::state,
            broadcasts::session_ids,
            broadcasts::send_at,
        ))
        .load(c))?)
}

pub fn devices(conn: &mut DbConn, ids: &[SessionId]) -> Result<Vec<DeviceState>> {
    Ok(db_run!(conn, |c| devices::table
        .filter(devices::id.eq_any(ids))
        .select(DeviceState::as_select())
        .load(c))?)
}

pub fn rows(conn: &mut DbConn, ids: &[SessionId]) -> Result<Vec<HealthRow>> {
    Ok(db_run!(conn, |c| session_health::table
        .filter(session_health::device_id.eq_any(ids))
        .select(HealthRow::as_select())
        .load(c))?)
}

/// Every unhealthy session (of every project), at most `limit`.
pub fn unhealthy(conn: &mut DbConn, limit: i64) -> Result<Vec<HealthRow>> {
    Ok(db_run!(conn, |c| session_health::table
        .filter(session_health::health.eq(UNHEALTHY))
        .limit(limit)
        .select(HealthRow::as_select())
        .load(c))?)
}

/// Notes what is not a change of health: since when the session is down (or that it is up
/// again), where the failure scan starts. A session seen for the first time is healthy.
pub fn observe(
    conn: &mut DbConn,
    device_id: &SessionId,
    project_id: &ProjectId,
    down_since: Option<i64>,
    scan_from: i64,
    now: i64,
) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(session_health::table)
        .values(HealthRow {
            device_id: device_id.clone(),
            project_id: project_id.clone(),
            health: HEALTHY.into(),
            reason: None,
            since: now,
            down_since,
            scan_from,
            updated_at: now,
        })
        .on_conflict(session_health::device_id)
        .do_update()
        .set((
            session_health::down_since.eq(down_since),
            session_health::scan_from.eq(scan_from),
            session_health::updated_at.eq(now),
        ))
        .execute(c))?;
    Ok(())
}

/// Moves a session from `from` to `to` health with its `session.health` event, in one
/// transaction; nothing when the stored health is no longer `from` (another node judged
/// it first). Returns whether it moved.
pub fn change(
    conn: &mut DbConn,
    row: &HealthRow,
    from: &str,
    to: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<bool> {
    conn.transaction(|conn| {
        let n = db_run!(conn, |c| diesel::update(
            session_health::table
                .filter(session_health::device_id.eq(&row.device_id))
                .filter(session_health::health.eq(from)),
        )
        .set((
            session_health::health.eq(to),
            session_health::reason.eq(reason),
            session_health::since.eq(now),
            session_health::down_since.eq(row.down_since),
            session_health::scan_from.eq(row.scan_from),
            session_health::updated_at.eq(now),
        ))
        .execute(c))?;
        if n == 0 {
            return Ok(false);
        }
        events::record(
            conn,
            NewEvent {
                project_id: row.project_id.clone(),
                device_id: Some(row.device_id.clone()),
                kind: ev::SESSION_HEALTH,
                fields: ev::session_health(to, reason, now),
            },
            now,
        )?;
        Ok(true)
    })
}

#[derive(QueryableByName)]
struct Outcome {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    status: String,
}

/// The session's last campaign messages with an outcome after `scan_from` (newest first, at
/// most `limit`): how many failed in a row, the newest that did not fail, the newest.
pub fn failure_run(
    conn: &mut DbConn,
    device_id: &SessionId,
    scan_from: i64,
    limit: i64,
) -> Result<(i64, Option<i64>, Option<i64>)> {
    let sql = conn.portable_sql(FAILURE_RUN);
    let rows: Vec<Outcome> = db_run!(conn, |c| diesel::sql_query(sql.as_ref())
        .bind::<Text, _>(device_id)
        .bind::<BigInt, _>(scan_from)
        .bind::<BigInt, _>(limit)
        .load(c))?;
    let failed = MessageStatus::Failed.as_str();
    let run = rows.iter().take_while(|r| r.status == failed).count() as i64;
    let ok = rows.iter().find(|r| r.status != failed).map(|r| r.seq);
    Ok((run, ok, rows.first().map(|r| r.seq)))
}

/// Why a paused campaign is paused: (by, reason).
pub fn pause_of(conn: &mut DbConn, broadcast_id: &str) -> Result<Option<(String, Option<String>)>> {
    Ok(db_run!(conn, |c| broadcast_pauses::table
        .find(broadcast_id)
        .select((broadcast_pauses::paused_by, broadcast_pauses::reason))
        .first(c)
        .optional())?)
}

/// Records who paused a campaign (replacing an earlier record).
pub fn set_pause(
    conn: &mut DbConn,
    broadcast_id: &str,
    by: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    clear_pause(conn, broadcast_id)?;
    db_run!(conn, |c| diesel::insert_into(broadcast_pauses::table)
        .values((
            broadcast_pauses::broadcast_id.eq(broadcast_id),
            broadcast_pauses::paused_by.eq(by),
            broadcast_pauses::reason.eq(reason),
            broadcast_pauses::since.eq(now),
        ))
        .execute(c))?;
    Ok(())
}

pub fn clear_pause(conn: &mut DbConn, broadcast_id: &str) -> Result<()> {
    db_run!(conn, |c| diesel::delete(
        broadcast_pauses::table.find(broadcast_id)
    )
    .execute(c))?;
    Ok(())
}

/// Moves a campaign from `from` to `to` for health (paused with `reason`, or resumed),
/// keeping `broadcast_pauses` in step. Returns whether it moved; call inside the
/// transaction that records its `broadcast.status` event.
pub fn move_campaign(
    conn: &mut DbConn,
    broadcast_id: &str,
    from: &str,
    to: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<bool> {
    // Only a pause by health is lifted by health, never a user's.
    let paused_by_health = if from == "paused" {
        pause_of(conn, broadcast_id)?.is_some_and(|(by, _)| by == BY_HEALTH)
    } else {
        true
    };
    if !paused_by_health {
        return Ok(false);
    }
    let n = db_run!(conn, |c| diesel::update(
        broadcasts::table
            .filter(broadcasts::id.eq(broadcast_id))
            .filter(broadcasts::state.eq(from)),
    )
    .set((broadcasts::state.eq(to), broadcasts::updated_at.eq(now)))
    .execute(c))?;
    if n == 0 {
        return Ok(false);
    }
    if to == "paused" {
        set_pause(conn, broadcast_id, BY_HEALTH, reason, now)?;
    } else {
        clear_pause(conn, broadcast_id)?;
    }
    Ok(true)
}

/// A campaign message waiting in a session's queue that was never handed to WhatsApp.
#[derive(Debug, Clone, QueryableByName)]
pub struct Withdrawable {
    #[diesel(sql_type = Text)]
    pub message_id: String,
    #[diesel(sql_type = Text)]
    pub project_id: String,
    #[diesel(sql_type = Text)]
    pub broadcast_id: String,
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Integer)]
    pub session_slot: i32,
}

/// Campaign messages of `device_id` still queued, unclaimed and never written to WhatsApp
/// (at most `limit`).
pub fn withdrawable(
    conn: &mut DbConn,
    device_id: &SessionId,
    now: i64,
    limit: i64,
) -> Result<Vec<Withdrawable>> {
    let sql = conn.portable_sql(WITHDRAWABLE);
    Ok(db_run!(conn, |c| diesel::sql_query(sql.as_ref())
        .bind::<Text, _>(device_id)
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(limit)
        .load(c))?)
}

/// Takes one back: the message fails as `REROUTED` (with its `message.status` event), its
/// recipient is dispatched again through `new_slot` (due now) and its idempotency key is
/// forgotten, so the next dispatch makes a new message. All or nothing, and only while the
/// message is still untouched by a sender. Returns whether it was taken back.
pub fn withdraw(conn: &mut DbConn, w: &Withdrawable, new_slot: i32, now: i64) -> Result<bool> {
    conn.transaction(|conn| {
        let n = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::id.eq(&w.message_id))
                .filter(messages::status.eq(MessageStatus::Queued))
                .filter(messages::wa_message_id.is_null())
                .filter(
                    messages::claimed_by
                        .is_null()
                        .or(messages::claim_expires_at.lt(now))
                ),
        )
        .set((
            messages::status.eq(MessageStatus::Failed),
            messages::error_code.eq(REROUTED),
            messages::error_message
                .eq("the session is unhealthy: moved to another session of the broadcast"),
            messages::failed_at.eq(now),
            messages::claimed_by.eq(None::<String>),
            messages::claim_expires_at.eq(None::<i64>),
        ))
        .execute(c))?;
        if n == 0 {
            return Ok(false);
        }
        db_run!(conn, |c| diesel::update(
            broadcast_recipients::table
                .filter(broadcast_recipients::broadcast_id.eq(&w.broadcast_id))
                .filter(broadcast_recipients::seq.eq(w.seq))
                .filter(broadcast_recipients::message_id.eq(&w.message_id)),
        )
        .set((
            broadcast_recipients::state.eq("created"),
            broadcast_recipients::message_id.eq(None::<String>),
            broadcast_recipients::session_slot.eq(new_slot),
            broadcast_recipients::available_at.eq(now),
            broadcast_recipients::held_reason.eq(None::<String>),
            broadcast_recipients::updated_at.eq(now),
        ))
        .execute(c))?;
        let key = format!("broadcast:{}:{}", w.broadcast_id, w.seq);
        db_run!(conn, |c| diesel::delete(
            idempotency_keys::table
                .filter(idempotency_keys::project_id.eq(&w.project_id))
                .filter(idempotency_keys::key.eq(&key)),
        )
        .execute(c))?;
        events::message_statuses(conn, std::slice::from_ref(&w.message_id), now)?;
        Ok(true)
    })
}

/// Sessions with campaign messages waiting in their queue (at most `limit`): a campaign
/// that handed everything over is done, but its messages may still wait on a session that
/// goes unhealthy.
pub fn queued_campaign_devices(conn: &mut DbConn, limit: i64) -> Result<Vec<SessionId>> {
    Ok(db_run!(conn, |c| messages::table
        .filter(messages::status.eq(MessageStatus::Queued))
        .filter(messages::payload.like("{\"broadcast_id\"%"))
        .select(messages::device_id)
        .distinct()
        .limit(limit)
        .load(c))?)
}

/// A completed campaign that got a recipient back (taken from an unhealthy session) runs
/// again until it is handed over. Returns whether it was reopened.
pub fn reopen(conn: &mut DbConn, broadcast_id: &str, now: i64) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::update(
        broadcasts::table
            .filter(broadcasts::id.eq(broadcast_id))
            .filter(broadcasts::state.eq("completed")),
    )
    .set((
        broadcasts::state.eq("running"),
        broadcasts::finished_at.eq(None::<i64>),
        broadcasts::updated_at.eq(now),
    ))
    .execute(c))?
        == 1)
}

/// Points a claimed recipient at another session of its campaign (its own is unhealthy).
pub fn reslot(
    conn: &mut DbConn,
    broadcast_id: &str,
    seq: i64,
    node: &str,
    slot: i32,
    now: i64,
) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::update(
        broadcast_recipients::table
            .filter(broadcast_recipients::broadcast_id.eq(broadcast_id))
            .filter(broadcast_recipients::seq.eq(seq))
            .filter(broadcast_recipients::claimed_by.eq(node))
            .filter(broadcast_recipients::state.eq("created")),
    )
    .set((
        broadcast_recipients::session_slot.eq(slot),
        broadcast_recipients::updated_at.eq(now),
    ))
    .execute(c))?
        == 1)
}

/// Lets go of a claimed recipient without a decision (its campaign is about to pause).
pub fn release(conn: &mut DbConn, broadcast_id: &str, seq: i64, node: &str) -> Result<()> {
    db_run!(conn, |c| diesel::update(
        broadcast_recipients::table
            .filter(broadcast_recipients::broadcast_id.eq(broadcast_id))
            .filter(broadcast_recipients::seq.eq(seq))
            .filter(broadcast_recipients::claimed_by.eq(node))
            .filter(broadcast_recipients::state.eq("created")),
    )
    .set((
        broadcast_recipients::claimed_by.eq(None::<String>),
        broadcast_recipients::claim_expires_at.eq(None::<i64>),
    ))
    .execute(c))?;
    Ok(())
}

/// The earliest time a campaign's undispatched recipient is due, with why it waits.
pub fn next_due(conn: &mut DbConn, broadcast_id: &str) -> Result<Option<(i64, Option<String>)>> {
    Ok(db_run!(conn, |c| broadcast_recipients::table
        .filter(broadcast_recipients::broadcast_id.eq(broadcast_id))
        .filter(broadcast_recipients::state.eq("created"))
        .order((
            broadcast_recipients::available_at.asc(),
            broadcast_recipients::seq.asc()
        ))
        .select((
            broadcast_recipients::available_at,
            broadcast_recipients::held_reason
        ))
        .first(c)
        .optional())?)
}
