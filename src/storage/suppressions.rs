//! A project's suppression list: numbers campaigns skip. A stop keyword from the number adds
//! it (in the transaction that stores the inbound message); an operator adds and removes.

use diesel::prelude::*;

use super::DbConn;
use super::schema::suppressions;
use crate::db_run;
use crate::error::Result;
use crate::values::ProjectId;

pub const STOP_KEYWORD: &str = "STOP_KEYWORD";
pub const MANUAL: &str = "MANUAL";

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = suppressions)]
pub struct SuppressionRow {
    pub project_id: ProjectId,
    pub phone: String,
    pub reason: String,
    pub detail: Option<String>,
    pub created_at: i64,
}

/// Adds the number (kept as first added when it is there already); true when it was new.
pub fn add(conn: &mut DbConn, row: &SuppressionRow) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::insert_into(suppressions::table)
        .values(row)
        .on_conflict((suppressions::project_id, suppressions::phone))
        .do_nothing()
        .execute(c))?
        == 1)
}

pub fn remove(conn: &mut DbConn, project_id: &ProjectId, phone: &str) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::delete(
        suppressions::table
            .filter(suppressions::project_id.eq(project_id))
            .filter(suppressions::phone.eq(phone)),
    )
    .execute(c))?
        == 1)
}

pub fn is_suppressed(conn: &mut DbConn, project_id: &ProjectId, phone: &str) -> Result<bool> {
    let n: i64 = db_run!(conn, |c| suppressions::table
        .filter(suppressions::project_id.eq(project_id))
        .filter(suppressions::phone.eq(phone))
        .count()
        .get_result(c))?;
    Ok(n > 0)
}

/// A page of the list by number, after `after`, and how many there are.
pub fn list(
    conn: &mut DbConn,
    project_id: &ProjectId,
    after: &str,
    limit: i64,
) -> Result<(Vec<SuppressionRow>, i64)> {
    Ok(db_run!(conn, |c| {
        let total: i64 = suppressions::table
            .filter(suppressions::project_id.eq(project_id))
            .count()
            .get_result(c)?;
        let rows = suppressions::table
            .filter(suppressions::project_id.eq(project_id))
            .filter(suppressions::phone.gt(after))
            .order(suppressions::phone.asc())
            .limit(limit)
            .select(SuppressionRow::as_select())
            .load(c)?;
        Ok::<_, diesel::result::Error>((rows, total))
    })?)
}
