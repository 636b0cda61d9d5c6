//! Projects (tenants): their RK credentials and limits, and the replay guard's seen request
//! signatures. A project is what every other row belongs to, and its row is the lock that
//! serialises creating its sessions (see `sessions::create_capped`).

use diesel::prelude::*;

use super::DbConn;
use super::schema::projects;
use crate::db_run;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = projects)]
pub struct ProjectRow {
    pub id: ProjectId,
    pub name: String,
    pub api_key_hash: String,
    pub api_key_prefix: String,
    pub api_secret_enc: String,
    pub rate_limit_per_minute: i64,
    pub monthly_quota: i64,
    pub max_sessions: i64,
    pub suspended: bool,
    pub created_at: i64,
    /// Refuse a request signature already seen within the signing window.
    pub refuse_replays: bool,
}

use crate::error::Result;
use crate::values::ProjectId;

pub fn insert_project(conn: &mut DbConn, row: &ProjectRow) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(projects::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

pub fn list_projects(conn: &mut DbConn) -> Result<Vec<ProjectRow>> {
    Ok(db_run!(conn, |c| projects::table
        .order(projects::created_at.asc())
        .select(ProjectRow::as_select())
        .load(c))?)
}

pub fn project_by_id(conn: &mut DbConn, id: &ProjectId) -> Result<Option<ProjectRow>> {
    Ok(db_run!(conn, |c| projects::table
        .find(id)
        .select(ProjectRow::as_select())
        .first(c)
        .optional())?)
}

pub fn project_by_key_hash(conn: &mut DbConn, hash: &str) -> Result<Option<ProjectRow>> {
    Ok(db_run!(conn, |c| projects::table
        .filter(projects::api_key_hash.eq(hash))
        .select(ProjectRow::as_select())
        .first(c)
        .optional())?)
}

pub fn set_credentials(
    conn: &mut DbConn,
    project_id: &ProjectId,
    key_hash: &str,
    key_prefix: &str,
    secret_enc: &str,
) -> Result<()> {
    db_run!(conn, |c| diesel::update(projects::table.find(project_id))
        .set((
            projects::api_key_hash.eq(key_hash),
            projects::api_key_prefix.eq(key_prefix),
            projects::api_secret_enc.eq(secret_enc),
        ))
        .execute(c))?;
    Ok(())
}

/// Records a request signature as seen until `expires_at`; false if it was seen before
/// (a replay). Shared by every node on the database.
pub fn record_signature(
    conn: &mut DbConn,
    project_id: &ProjectId,
    signature_hash: &str,
    expires_at: i64,
) -> Result<bool> {
    use super::schema::seen_signatures as s;
    let inserted = db_run!(conn, |c| diesel::insert_into(s::table)
        .values((
            s::project_id.eq(project_id),
            s::signature_hash.eq(signature_hash),
            s::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// Forgets signatures whose timestamp has left the window.
pub fn purge_signatures(conn: &mut DbConn, now: i64) -> Result<usize> {
    use super::schema::seen_signatures as s;
    Ok(db_run!(conn, |c| diesel::delete(
        s::table.filter(s::expires_at.lt(now))
    )
    .execute(c))?)
}

/// Turns the replay guard of a project on or off.
pub fn set_refuse_replays(conn: &mut DbConn, project_id: &ProjectId, on: bool) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(projects::table.find(project_id))
        .set(projects::refuse_replays.eq(on))
        .execute(c))?;
    Ok(n == 1)
}
