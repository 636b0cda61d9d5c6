//! Broadcast campaigns and their recipients. A campaign's state machine (`scheduled` →
//! `running` → `completed`, `paused`, `cancelled`) lives on its row; each recipient is
//! `created` until the dispatcher hands it to the outbound queue (`enqueued`, with its
//! message id) or gives it up (`failed` with a code, `cancelled`). Claims are leased and, on
//! PostgreSQL, taken with `FOR UPDATE SKIP LOCKED`, so several nodes dispatch one campaign
//! without sending a recipient twice. A recipient's delivery status is read from its message.

use std::sync::LazyLock;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use super::schema::{broadcast_recipients, broadcasts};
use super::{Backend, DbConn};
use crate::db_run;
use crate::error::Result;
use crate::values::{BroadcastId, ProjectId};

pub const SCHEDULED: &str = "scheduled";
pub const RUNNING: &str = "running";
pub const PAUSED: &str = "paused";
pub const COMPLETED: &str = "completed";
pub const CANCELLED: &str = "cancelled";

pub const CREATED: &str = "created";
pub const ENQUEUED: &str = "enqueued";
pub const FAILED: &str = "failed";

const CLAIM: &str = include_str!("sql/claim_recipients.sql");
static CLAIM_SKIP_LOCKED: LazyLock<String> =
    LazyLock::new(|| CLAIM.replacen("/* row lock */", "FOR UPDATE OF r SKIP LOCKED", 1));
const COUNTS: &str = include_str!("sql/broadcast_counts.sql");
const LOG: &str = include_str!("sql/broadcast_log.sql");
const EXPAND: &str = include_str!("sql/expand_list.sql");
const REPLIED: &str = include_str!("sql/broadcast_replied.sql");

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = broadcasts)]
pub struct BroadcastRow {
    pub id: BroadcastId,
    pub project_id: ProjectId,
    pub name: String,
    pub template_id: String,
    pub language: String,
    pub kind: String,
    pub contact_list_id: Option<String>,
    pub session_ids: String,
    pub parameters: String,
    pub state: String,
    pub execute_type: String,
    pub send_at: i64,
    pub pacing_min_ms: i64,
    pub pacing_max_ms: i64,
    pub daily_cap: i64,
    pub recipients_total: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = broadcast_recipients)]
pub struct NewRecipient {
    pub broadcast_id: BroadcastId,
    pub seq: i64,
    pub phone: String,
    pub full_name: String,
    pub variables: String,
    pub session_slot: i32,
    pub state: String,
    pub available_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A recipient the dispatcher claimed.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = Text)]
    pub broadcast_id: String,
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub phone: String,
    #[diesel(sql_type = Text)]
    pub full_name: String,
    #[diesel(sql_type = Text)]
    pub variables: String,
    #[diesel(sql_type = Integer)]
    pub session_slot: i32,
}

#[derive(Debug, Clone, QueryableByName)]
pub struct CountRow {
    #[diesel(sql_type = Text)]
    pub r_state: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub m_status: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

#[derive(Debug, Clone, QueryableByName)]
pub struct LogRow {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub phone: String,
    #[diesel(sql_type = Text)]
    pub full_name: String,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Integer)]
    pub session_slot: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub message_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error_message: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub held_reason: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub available_at: i64,
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
    #[diesel(sql_type = BigInt)]
    pub updated_at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub m_status: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub wa_message_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub m_error_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub m_error_message: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub sent_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub delivered_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub read_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub failed_at: Option<i64>,
    /// The recipient wrote back on the session within the reply window after it was sent.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub replied: bool,
}

/// Stores a campaign with its recipients: the given ones (a direct send), or, with
/// `from_list`, one per contact of that list (one statement). Returns the recipient count.
pub fn create(
    conn: &mut DbConn,
    row: &BroadcastRow,
    recipients: &[NewRecipient],
    from_list: Option<(&str, i32)>,
) -> Result<i64> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::insert_into(broadcasts::table)
            .values(row)
            .execute(c))?;
        let mut total = 0i64;
        for chunk in recipients.chunks(500) {
            total += db_run!(conn, |c| diesel::insert_into(broadcast_recipients::table)
                .values(chunk)
                .execute(c))? as i64;
        }
        if let Some((list_id, sessions)) = from_list {
            let sql = conn.portable_sql(EXPAND);
            total += db_run!(conn, |c| diesel::sql_query(sql.as_ref())
                .bind::<Text, _>(&row.id)
                .bind::<Text, _>(list_id)
                .bind::<Integer, _>(sessions)
                .bind::<BigInt, _>(row.created_at)
                .execute(c))? as i64;
        }
        db_run!(conn, |c| diesel::update(broadcasts::table.find(&row.id))
            .set(broadcasts::recipients_total.eq(total))
            .execute(c))?;
        Ok(total)
    })
}

pub fn get(
    conn: &mut DbConn,
    project_id: &ProjectId,
    id: &BroadcastId,
) -> Result<Option<BroadcastRow>> {
    Ok(db_run!(conn, |c| broadcasts::table
        .filter(broadcasts::id.eq(id))
        .filter(broadcasts::project_id.eq(project_id))
        .select(BroadcastRow::as_select())
        .first(c)
        .optional())?)
}

/// For the dispatcher, which acts for every project.
pub fn get_any(conn: &mut DbConn, id: &str) -> Result<Option<BroadcastRow>> {
    Ok(db_run!(conn, |c| broadcasts::table
        .find(id)
        .select(BroadcastRow::as_select())
        .first(c)
        .optional())?)
}

pub fn list(
    conn: &mut DbConn,
    project_id: &ProjectId,
    skip: i64,
    limit: i64,
) -> Result<(Vec<BroadcastRow>, i64)> {
    Ok(db_run!(conn, |c| {
        let total: i64 = broadcasts::table
            .filter(broadcasts::project_id.eq(project_id))
            .count()
            .get_result(c)?;
        let rows = broadcasts::table
            .filter(broadcasts::project_id.eq(project_id))
            .order((broadcasts::created_at.desc(), broadcasts::id.desc()))
            .offset(skip)
            .limit(limit)
            .select(BroadcastRow::as_select())
            .load(c)?;
        Ok::<_, diesel::result::Error>((rows, total))
    })?)
}

/// Scheduled campaigns whose time came start; returns their ids.
pub fn start_due(conn: &mut DbConn, now: i64) -> Result<Vec<String>> {
    Ok(db_run!(conn, |c| diesel::update(
        broadcasts::table
            .filter(broadcasts::state.eq(SCHEDULED))
            .filter(broadcasts::send_at.le(now)),
    )
    .set((
        broadcasts::state.eq(RUNNING),
        broadcasts::started_at.eq(now),
        broadcasts::updated_at.eq(now),
    ))
    .returning(broadcasts::id)
    .get_results(c))?)
}

/// Running campaigns with no recipient left to dispatch are completed; returns their ids.
pub fn complete_finished(conn: &mut DbConn, now: i64) -> Result<Vec<String>> {
    use diesel::dsl::{exists, not};
    Ok(db_run!(conn, |c| diesel::update(
        broadcasts::table
            .filter(broadcasts::state.eq(RUNNING))
            .filter(not(exists(
                broadcast_recipients::table
                    .filter(broadcast_recipients::broadcast_id.eq(broadcasts::id))
                    .filter(broadcast_recipients::state.eq(CREATED))
            ))),
    )
    .set((
        broadcasts::state.eq(COMPLETED),
        broadcasts::finished_at.eq(now),
        broadcasts::updated_at.eq(now),
    ))
    .returning(broadcasts::id)
    .get_results(c))?)
}

/// Claims up to `limit` due recipients for `node`, leased for `lease_ms`.
pub fn claim(
    conn: &mut DbConn,
    node: &str,
    limit: i64,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<Claimed>> {
    let sql = match conn.backend() {
        Backend::Postgres => conn.portable_sql(CLAIM_SKIP_LOCKED.as_str()),
        Backend::Sqlite => conn.portable_sql(CLAIM),
    };
    conn.transaction(|conn| {
        Ok(db_run!(conn, |c| diesel::sql_query(sql.as_ref())
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(node)
            .bind::<BigInt, _>(now + lease_ms)
            .bind::<BigInt, _>(limit)
            .load(c))?)
    })
}

macro_rules! claimed {
    ($id:expr, $seq:expr, $node:expr) => {
        broadcast_recipients::table
            .filter(broadcast_recipients::broadcast_id.eq($id))
            .filter(broadcast_recipients::seq.eq($seq))
            .filter(broadcast_recipients::claimed_by.eq($node))
            .filter(broadcast_recipients::state.eq(CREATED))
    };
}

/// The recipient's message is in the outbound queue.
pub fn mark_enqueued(
    conn: &mut DbConn,
    id: &str,
    seq: i64,
    node: &str,
    message_id: &str,
    now: i64,
) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::update(claimed!(id, seq, node))
        .set((
            broadcast_recipients::state.eq(ENQUEUED),
            broadcast_recipients::message_id.eq(message_id),
            broadcast_recipients::claimed_by.eq(None::<String>),
            broadcast_recipients::claim_expires_at.eq(None::<i64>),
            broadcast_recipients::held_reason.eq(None::<String>),
            broadcast_recipients::updated_at.eq(now),
        ))
        .execute(c))?
        == 1)
}

/// The recipient is given up, with why (`OPTED_OUT`, a template that no longer renders…).
pub fn mark_failed(
    conn: &mut DbConn,
    id: &str,
    seq: i64,
    node: &str,
    code: &str,
    message: &str,
    now: i64,
) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::update(claimed!(id, seq, node))
        .set((
            broadcast_recipients::state.eq(FAILED),
            broadcast_recipients::error_code.eq(code),
            broadcast_recipients::error_message.eq(message),
            broadcast_recipients::claimed_by.eq(None::<String>),
            broadcast_recipients::claim_expires_at.eq(None::<i64>),
            broadcast_recipients::updated_at.eq(now),
        ))
        .execute(c))?
        == 1)
}

/// The recipient waits until `until`, and says why (pacing, a rate limit).
pub fn hold(
    conn: &mut DbConn,
    id: &str,
    seq: i64,
    node: &str,
    reason: &str,
    until: i64,
    now: i64,
) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::update(claimed!(id, seq, node))
        .set((
            broadcast_recipients::available_at.eq(until),
            broadcast_recipients::held_reason.eq(reason),
            broadcast_recipients::claimed_by.eq(None::<String>),
            broadcast_recipients::claim_expires_at.eq(None::<i64>),
            broadcast_recipients::updated_at.eq(now),
        ))
        .execute(c))?
        == 1)
}

/// A campaign's recipients on one session: `slot` in its session list, recipients spread
/// over `stride` sessions, and the least gap between two of its messages.
#[derive(Debug, Clone, Copy)]
pub struct Lane {
    pub slot: i32,
    pub stride: i64,
    pub step_ms: i64,
}

/// Holds a claimed recipient until its session's next pacing slot, and the unclaimed
/// recipients of the same campaign and session that would be due before then one `step_ms`
/// apart after it (by their place in the campaign): each is looked at again about when its
/// turn can come, not all at every slot. Pacing itself is decided when each comes due.
#[allow(clippy::too_many_arguments)]
pub fn hold_lane(
    conn: &mut DbConn,
    id: &str,
    seq: i64,
    node: &str,
    lane: &Lane,
    reason: &str,
    until: i64,
    now: i64,
) -> Result<bool> {
    conn.transaction(|c| {
        if !hold(c, id, seq, node, reason, until, now)? {
            return Ok(false);
        }
        let sql = c.portable_sql(
            "UPDATE broadcast_recipients \
             SET available_at = $1 + ((seq - $2) / $3) * $4, held_reason = $5, updated_at = $6 \
             WHERE broadcast_id = $7 AND session_slot = $8 AND state = 'created' \
               AND seq > $2 AND available_at < $1 + ((seq - $2) / $3) * $4 \
               AND (claimed_by IS NULL OR claim_expires_at < $6)",
        );
        db_run!(c, |c| diesel::sql_query(sql.as_ref())
            .bind::<BigInt, _>(until)
            .bind::<BigInt, _>(seq)
            .bind::<BigInt, _>(lane.stride.max(1))
            .bind::<BigInt, _>(lane.step_ms)
            .bind::<Text, _>(reason)
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(id)
            .bind::<Integer, _>(lane.slot)
            .execute(c))?;
        Ok(true)
    })
}

/// Moves a campaign from one of `from` to `to`; with `cancel`, its recipients not yet
/// dispatched are cancelled in the same transaction. Returns the row when it moved.
pub fn transition(
    conn: &mut DbConn,
    project_id: &ProjectId,
    id: &BroadcastId,
    from: &[&str],
    to: &str,
    now: i64,
) -> Result<Option<BroadcastRow>> {
    conn.transaction(|conn| {
        let n = db_run!(conn, |c| diesel::update(
            broadcasts::table
                .filter(broadcasts::id.eq(id))
                .filter(broadcasts::project_id.eq(project_id))
                .filter(broadcasts::state.eq_any(from)),
        )
        .set((broadcasts::state.eq(to), broadcasts::updated_at.eq(now)))
        .execute(c))?;
        if n == 0 {
            return Ok(None);
        }
        if to == CANCELLED {
            db_run!(conn, |c| diesel::update(
                broadcast_recipients::table
                    .filter(broadcast_recipients::broadcast_id.eq(id))
                    .filter(broadcast_recipients::state.eq(CREATED)),
            )
            .set((
                broadcast_recipients::state.eq(CANCELLED),
                broadcast_recipients::error_code.eq("CANCELLED"),
                broadcast_recipients::error_message.eq("the broadcast was cancelled"),
                broadcast_recipients::updated_at.eq(now),
            ))
            .execute(c))?;
            db_run!(conn, |c| diesel::update(broadcasts::table.find(id))
                .set(broadcasts::finished_at.eq(now))
                .execute(c))?;
        }
        get(conn, project_id, id)
    })
}

pub fn counts(conn: &mut DbConn, id: &BroadcastId) -> Result<Vec<CountRow>> {
    let sql = conn.portable_sql(COUNTS);
    Ok(db_run!(conn, |c| diesel::sql_query(sql.as_ref())
        .bind::<Text, _>(id)
        .load(c))?)
}

pub fn log(
    conn: &mut DbConn,
    id: &BroadcastId,
    after: i64,
    limit: i64,
    reply_window_ms: i64,
) -> Result<Vec<LogRow>> {
    let sql = conn.portable_sql(LOG);
    Ok(db_run!(conn, |c| diesel::sql_query(sql.as_ref())
        .bind::<Text, _>(id)
        .bind::<BigInt, _>(after)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(reply_window_ms)
        .load(c))?)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Recipients that wrote back on their session within the window after their message was
/// sent (Qontak's `replied`).
pub fn replied(conn: &mut DbConn, id: &BroadcastId, reply_window_ms: i64) -> Result<i64> {
    let sql = conn.portable_sql(REPLIED);
    let rows: Vec<Count> = db_run!(conn, |c| diesel::sql_query(sql.as_ref())
        .bind::<Text, _>(id)
        .bind::<BigInt, _>(reply_window_ms)
        .load(c))?;
    Ok(rows.first().map(|r| r.n).unwrap_or(0))
}
