//! Sessions: one row of `devices` each (a session is also an RK device, addressed by its
//! code). What the session supervisor persists — a session's account and state — each change
//! with its `session.status` event in one transaction — and creating a session within its
//! project's session cap.

use diesel::prelude::*;

use super::DbConn;
use super::events;
use super::schema::{devices, projects};
use super::webhooks::{self, WebhookRow};
use crate::db_run;
use crate::error::{Error, Result};
use crate::values::{ProjectId, SessionId};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = devices)]
pub struct DeviceRow {
    pub id: SessionId,
    pub project_id: ProjectId,
    pub code: String,
    pub name: String,
    pub state: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = devices)]
pub struct SessionRow {
    pub id: SessionId,
    pub project_id: ProjectId,
    pub code: String,
    pub name: String,
    pub state: String,
    pub created_at: i64,
    pub phone: Option<String>,
    pub push_name: Option<String>,
    pub wa_jid: Option<String>,
    pub wa_lid: Option<String>,
    pub state_reason: Option<String>,
    pub last_connected_at: Option<i64>,
}

pub fn get(conn: &mut DbConn, device_id: &SessionId) -> Result<Option<SessionRow>> {
    Ok(db_run!(conn, |c| devices::table
        .find(device_id)
        .select(SessionRow::as_select())
        .first(c)
        .optional())?)
}

pub fn list(conn: &mut DbConn, project_id: &ProjectId) -> Result<Vec<SessionRow>> {
    Ok(db_run!(conn, |c| devices::table
        .filter(devices::project_id.eq(project_id))
        .order(devices::created_at.asc())
        .select(SessionRow::as_select())
        .load(c))?)
}

/// Sessions this node is about to run (it just claimed their leases): the linked ones are
/// marked `connecting` in the same transaction (their stored state from before would
/// otherwise be read back as current until each connects), with their events. Answers every
/// row, oldest first.
pub fn begin_run(
    conn: &mut DbConn,
    device_ids: &[String],
    reason: &str,
    now: i64,
) -> Result<Vec<SessionRow>> {
    conn.transaction(|conn| {
        let linked: Vec<SessionId> = db_run!(conn, |c| diesel::update(
            devices::table
                .filter(devices::id.eq_any(device_ids))
                .filter(devices::wa_jid.is_not_null())
                .filter(devices::state.ne_all(["logged_out", "replaced", "deleted"])),
        )
        .set((
            devices::state.eq("connecting"),
            devices::state_reason.eq(reason),
            devices::updated_at.eq(now),
        ))
        .returning(devices::id)
        .get_results(c))?;
        for id in &linked {
            events::session_status(conn, id, "connecting", Some(reason), None, now)?;
        }
        let mut rows: Vec<SessionRow> = db_run!(conn, |c| devices::table
            .filter(devices::id.eq_any(device_ids))
            .select(SessionRow::as_select())
            .load(c))?;
        rows.sort_by_key(|r| r.created_at);
        Ok(rows)
    })
}

/// Records a state change and, when the state or its reason really changed, its
/// `session.status` event in the same transaction.
pub fn set_state(
    conn: &mut DbConn,
    device_id: &SessionId,
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        let before: Option<(String, Option<String>)> = db_run!(conn, |c| devices::table
            .find(device_id)
            .select((devices::state, devices::state_reason))
            .first(c)
            .optional())?;
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::state.eq(state),
                devices::state_reason.eq(reason),
                devices::updated_at.eq(now)
            ))
            .execute(c))?;
        let changed = before.is_some_and(|(s, r)| s != state || r.as_deref() != reason);
        if changed {
            events::session_status(conn, device_id, state, reason, None, now)?;
        }
        Ok(())
    })
}

/// A new pairing QR code: state `qr` and a `session.status` event carrying the code.
pub fn set_qr(conn: &mut DbConn, device_id: &SessionId, code: &str, now: i64) -> Result<()> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::state.eq("qr"),
                devices::state_reason.eq(None::<String>),
                devices::updated_at.eq(now)
            ))
            .execute(c))?;
        events::session_status(conn, device_id, "qr", None, Some(code), now)
    })
}

/// Moves those of `device_ids` whose stored state is one of `from` to `state` (with
/// `session.status` events), in one transaction. Deciding on the stored state, not on a
/// caller's earlier reading, keeps a state written meanwhile (say `banned`) from being
/// overwritten. Returns the ids that moved.
pub fn set_states_from(
    conn: &mut DbConn,
    device_ids: &[SessionId],
    from: &[&str],
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<Vec<SessionId>> {
    if device_ids.is_empty() {
        return Ok(Vec::new());
    }
    conn.transaction(|conn| {
        let moved: Vec<SessionId> = db_run!(conn, |c| diesel::update(
            devices::table
                .filter(devices::id.eq_any(device_ids))
                .filter(devices::state.eq_any(from)),
        )
        .set((
            devices::state.eq(state),
            devices::state_reason.eq(reason),
            devices::updated_at.eq(now)
        ))
        .returning(devices::id)
        .get_results(c))?;
        for id in &moved {
            events::session_status(conn, id, state, reason, None, now)?;
        }
        Ok(moved)
    })
}

pub fn set_account(
    conn: &mut DbConn,
    device_id: &SessionId,
    jid: &str,
    lid: Option<&str>,
    phone: &str,
    now: i64,
) -> Result<()> {
    db_run!(conn, |c| diesel::update(devices::table.find(device_id))
        .set((
            devices::wa_jid.eq(jid),
            devices::wa_lid.eq(lid),
            devices::phone.eq(phone),
            devices::linked_at.eq(now),
            devices::updated_at.eq(now)
        ))
        .execute(c))?;
    Ok(())
}

pub fn set_connected(
    conn: &mut DbConn,
    device_id: &SessionId,
    push_name: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::state.eq("connected"),
                devices::state_reason.eq(None::<String>),
                devices::last_connected_at.eq(now),
                devices::updated_at.eq(now),
            ))
            .execute(c))?;
        if let Some(name) = push_name {
            db_run!(conn, |c| diesel::update(devices::table.find(device_id))
                .set(devices::push_name.eq(name))
                .execute(c))?;
        }
        events::session_status(conn, device_id, "connected", None, None, now)
    })
}

/// Forgets the linked account (after a logout), keeping the session slot.
pub fn clear_account(
    conn: &mut DbConn,
    device_id: &SessionId,
    state: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        db_run!(conn, |c| diesel::update(devices::table.find(device_id))
            .set((
                devices::wa_jid.eq(None::<String>),
                devices::wa_lid.eq(None::<String>),
                devices::state.eq(state),
                devices::state_reason.eq(reason),
                devices::updated_at.eq(now),
            ))
            .execute(c))?;
        events::session_status(conn, device_id, state, reason, None, now)
    })
}

pub fn delete(conn: &mut DbConn, device_id: &SessionId) -> Result<bool> {
    Ok(
        db_run!(conn, |c| diesel::delete(devices::table.find(device_id))
            .execute(c))?
            == 1,
    )
}

pub fn insert_device(conn: &mut DbConn, row: &DeviceRow) -> Result<()> {
    let result = db_run!(conn, |c| diesel::insert_into(devices::table)
        .values(row)
        .execute(c));
    match result {
        Ok(_) => Ok(()),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Err(Error::DeviceCodeTaken),
        Err(e) => Err(e.into()),
    }
}

pub fn list_devices(conn: &mut DbConn, project_id: &ProjectId) -> Result<Vec<DeviceRow>> {
    Ok(db_run!(conn, |c| devices::table
        .filter(devices::project_id.eq(project_id))
        .order(devices::created_at.asc())
        .select(DeviceRow::as_select())
        .load(c))?)
}

pub fn device_by_code(
    conn: &mut DbConn,
    project_id: &ProjectId,
    code: &str,
) -> Result<Option<DeviceRow>> {
    Ok(db_run!(conn, |c| devices::table
        .filter(devices::project_id.eq(project_id))
        .filter(devices::code.eq(code))
        .select(DeviceRow::as_select())
        .first(c)
        .optional())?)
}

/// A session to create with everything that must exist before it starts: its row, the hash
/// of its API key, and the webhook registered with it (so that webhook gets the session's
/// very first event).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub device: DeviceRow,
    pub key_hash: String,
    pub webhook: Option<WebhookRow>,
}

/// Creates a session within its project's session cap, in one transaction that first takes
/// the project row's lock: on PostgreSQL `SELECT … FOR NO KEY UPDATE`, on SQLite the write
/// lock every [`DbConn::transaction`] takes at `BEGIN IMMEDIATE`. Concurrent creates for one
/// project (on any number of nodes) therefore count one after another and can never pass
/// the cap together.
///
/// `NO KEY`: the strength of `FOR UPDATE` that two creates need to exclude each other, minus
/// the part that would also block every insert referencing the project meanwhile (messages,
/// events: their foreign-key checks take `KEY SHARE` on the project row).
pub fn create_capped(conn: &mut DbConn, new: &NewSession) -> Result<()> {
    let project_id = &new.device.project_id;
    conn.transaction(|conn| {
        let cap = lock_project_cap(conn, project_id)?.ok_or(Error::ProjectNotFound)?;
        let count: i64 = db_run!(conn, |c| devices::table
            .filter(devices::project_id.eq(project_id))
            .count()
            .get_result(c))?;
        if count >= cap {
            return Err(Error::SessionLimitReached);
        }
        insert_device(conn, &new.device)?;
        db_run!(conn, |c| diesel::update(
            devices::table.find(&new.device.id)
        )
        .set(devices::session_key_hash.eq(&new.key_hash))
        .execute(c))?;
        if let Some(hook) = &new.webhook {
            webhooks::insert(conn, hook)?;
        }
        Ok(())
    })
}

/// The project's session cap, read under the project row's lock (held to the end of the
/// transaction); `None` if there is no such project.
fn lock_project_cap(conn: &mut DbConn, project_id: &ProjectId) -> Result<Option<i64>> {
    let cap = projects::table
        .find(project_id)
        .select(projects::max_sessions);
    Ok(match conn {
        DbConn::Postgres(c) => cap.for_no_key_update().first(c).optional()?,
        // The transaction's BEGIN IMMEDIATE holds the database's write lock already.
        DbConn::Sqlite(c) => cap.first(c).optional()?,
    })
}
