//! Pacing state in the database, so that neither a restart nor a failover resets a cap or
//! lets a burst out: each project's send policy (`send_policies`), each session's slot
//! book (`session_pacing`: when its next paced message may go, how many went, and how many
//! to new contacts, on its current local day), and the facts a decision reads (when the
//! session was linked, whether it ever talked with a number). The rules are in
//! `domain::broadcasts::pacing`.

use diesel::prelude::*;

use super::DbConn;
use super::schema::{devices, inbound_messages, messages, send_policies, session_pacing};
use crate::db_run;
use crate::error::Result;
use crate::values::ProjectId;

/// A project's stored policy (every field explicit: the row is written whole, its `None`s
/// as NULL).
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Queryable, Selectable, AsChangeset)]
#[diesel(table_name = send_policies, primary_key(project_id), treat_none_as_null = true)]
pub struct PolicyRow {
    pub project_id: ProjectId,
    pub min_gap_ms: i64,
    pub max_gap_ms: i64,
    pub daily_cap: i64,
    pub new_contact_cap: i64,
    pub warmup_days: i32,
    pub warmup_start_pct: i32,
    pub quiet_start_min: Option<i32>,
    pub quiet_end_min: Option<i32>,
    pub utc_offset_min: i32,
    pub typing: bool,
    pub typing_min_ms: i64,
    pub typing_max_ms: i64,
    pub all_messages: bool,
    pub updated_at: i64,
}

pub fn get_policy(conn: &mut DbConn, project_id: &ProjectId) -> Result<Option<PolicyRow>> {
    Ok(db_run!(conn, |c| send_policies::table
        .find(project_id)
        .select(PolicyRow::as_select())
        .first(c)
        .optional())?)
}

/// Stores the project's policy, replacing the previous one.
pub fn put_policy(conn: &mut DbConn, row: &PolicyRow) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(send_policies::table)
        .values(row)
        .on_conflict(send_policies::project_id)
        .do_update()
        .set(row)
        .execute(c))?;
    Ok(())
}

/// When the session's account was linked (its creation for sessions linked before this was
/// recorded); `None` when it is not linked.
pub fn linked_at(conn: &mut DbConn, device_id: &str) -> Result<Option<i64>> {
    let row: Option<(Option<i64>, i64)> = db_run!(conn, |c| devices::table
        .find(device_id)
        .select((devices::linked_at, devices::created_at))
        .first(c)
        .optional())?;
    Ok(row.map(|(linked, created)| linked.unwrap_or(created)))
}

/// A number the session never messaged (other than by `except`, the message being paced)
/// and that never wrote to it. Both lookups are indexed (`messages_by_recipient`,
/// `inbound_by_sender`).
pub fn is_new_contact(
    conn: &mut DbConn,
    device_id: &str,
    phone: &str,
    except: Option<&str>,
) -> Result<bool> {
    use diesel::dsl::{exists, select};
    let except = except.unwrap_or("");
    let known: bool = db_run!(conn, |c| select(exists(
        messages::table
            .filter(messages::device_id.eq(device_id))
            .filter(messages::recipient.eq(phone))
            .filter(messages::id.ne(except))
    ))
    .get_result(c))?;
    if known {
        return Ok(false);
    }
    let wrote: bool = db_run!(conn, |c| select(exists(
        inbound_messages::table
            .filter(inbound_messages::device_id.eq(device_id))
            .filter(inbound_messages::sender_phone.eq(phone))
    ))
    .get_result(c))?;
    Ok(!wrote)
}

/// Why a slot is not free now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The gap since the session's previous paced message.
    Gap,
    /// The session's daily cap is reached.
    DailyCap,
    /// The session's daily cap of new contacts is reached (known contacts may still go).
    NewContacts,
}

/// What pacing allows a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Send now; the session's next paced message waits until the reserved gap has passed.
    Go,
    /// Not before this time.
    Wait { until: i64, why: Why },
}

/// One request for a slot of a session.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub device_id: &'a str,
    pub now: i64,
    /// Reserved after this message before the next may go.
    pub gap_ms: i64,
    /// Paced messages per local day (0: none).
    pub cap: i64,
    /// Whether this message goes to a new contact, and their cap per day (0: none).
    pub new_contact: bool,
    pub new_cap: i64,
    /// The session's local day now and when the next one starts (Unix ms).
    pub day: &'a str,
    pub next_day_at: i64,
}

/// Takes a send slot of the session if pacing allows one now. The row is locked
/// (PostgreSQL) so two nodes never take the same slot; SQLite has one writer.
pub fn reserve(conn: &mut DbConn, ask: Ask<'_>) -> Result<Pace> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::insert_into(session_pacing::table)
            .values((
                session_pacing::device_id.eq(ask.device_id),
                session_pacing::next_at.eq(0i64),
                session_pacing::day.eq(ask.day),
                session_pacing::sent_today.eq(0i64),
                session_pacing::new_today.eq(0i64),
                session_pacing::last_sent_at.eq(0i64),
            ))
            .on_conflict_do_nothing()
            .execute(c))?;
        let base = session_pacing::table.find(ask.device_id).select((
            session_pacing::next_at,
            session_pacing::day,
            session_pacing::sent_today,
            session_pacing::new_today,
        ));
        let (next_at, stored_day, sent, new): (i64, String, i64, i64) = match conn {
            DbConn::Postgres(c) => base.for_update().first(c)?,
            DbConn::Sqlite(c) => base.first(c)?,
        };
        let (sent, new) = if stored_day == ask.day {
            (sent, new)
        } else {
            (0, 0)
        };
        let wait = |why| Pace::Wait {
            until: ask.next_day_at,
            why,
        };
        if ask.cap > 0 && sent >= ask.cap {
            return Ok(wait(Why::DailyCap));
        }
        if ask.new_contact && ask.new_cap > 0 && new >= ask.new_cap {
            return Ok(wait(Why::NewContacts));
        }
        if next_at > ask.now {
            return Ok(Pace::Wait {
                until: next_at,
                why: Why::Gap,
            });
        }
        db_run!(conn, |c| diesel::update(
            session_pacing::table.find(ask.device_id)
        )
        .set((
            session_pacing::next_at.eq(ask.now + ask.gap_ms),
            session_pacing::day.eq(ask.day),
            session_pacing::sent_today.eq(sent + 1),
            session_pacing::new_today.eq(new + i64::from(ask.new_contact)),
        ))
        .execute(c))?;
        Ok(Pace::Go)
    })
}

/// After a project's policy changed, what pacing held is due again at once and is decided
/// under the new policy: campaign recipients held by pacing, and queued messages deferred by
/// it. Returns how many.
pub fn release_held(conn: &mut DbConn, project_id: &ProjectId, now: i64) -> Result<usize> {
    use super::schema::{broadcast_recipients, broadcasts};
    conn.transaction(|conn| {
        let campaigns = broadcasts::table
            .filter(broadcasts::project_id.eq(project_id))
            .select(broadcasts::id);
        let recipients = db_run!(conn, |c| diesel::update(
            broadcast_recipients::table
                .filter(broadcast_recipients::broadcast_id.eq_any(campaigns))
                .filter(broadcast_recipients::state.eq(super::broadcasts::CREATED))
                .filter(broadcast_recipients::available_at.gt(now))
                .filter(broadcast_recipients::held_reason.like("pacing:%")),
        )
        .set(broadcast_recipients::available_at.eq(now))
        .execute(c))?;
        let queued = db_run!(conn, |c| diesel::update(
            messages::table
                .filter(messages::project_id.eq(project_id))
                .filter(messages::status.eq(crate::values::MessageStatus::Queued))
                .filter(messages::available_at.gt(now))
                .filter(messages::error_message.like("pacing:%")),
        )
        .set(messages::available_at.eq(now))
        .execute(c))?;
        Ok(recipients + queued)
    })
}

/// When the session last sent a paced message (0: never), and, for a campaign's message,
/// that campaign's shortest gap.
pub fn last_sent(
    conn: &mut DbConn,
    device_id: &str,
    broadcast_id: Option<&str>,
) -> Result<(i64, Option<i64>)> {
    use super::schema::broadcasts;
    let last: Option<i64> = db_run!(conn, |c| session_pacing::table
        .find(device_id)
        .select(session_pacing::last_sent_at)
        .first(c)
        .optional())?;
    let gap = match broadcast_id {
        Some(id) => db_run!(conn, |c| broadcasts::table
            .find(id)
            .select(broadcasts::pacing_min_ms)
            .first::<i64>(c)
            .optional())?,
        None => None,
    };
    Ok((last.unwrap_or(0), gap))
}

/// The session sent a paced message at `at`: the next one keeps its gap from here, however
/// long this one spent in the queue.
pub fn sent_paced(conn: &mut DbConn, device_id: &str, at: i64) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(session_pacing::table)
        .values((
            session_pacing::device_id.eq(device_id),
            session_pacing::next_at.eq(0i64),
            session_pacing::day.eq(""),
            session_pacing::sent_today.eq(0i64),
            session_pacing::new_today.eq(0i64),
            session_pacing::last_sent_at.eq(at),
        ))
        .on_conflict(session_pacing::device_id)
        .do_update()
        .set(session_pacing::last_sent_at.eq(at))
        .execute(c))?;
    Ok(())
}
