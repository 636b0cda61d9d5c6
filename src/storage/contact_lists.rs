//! Contact lists: the list row (import progress and counts), its contacts (one per number,
//! written in batches; a later row with the same number replaces the earlier one's values)
//! and the refused rows with their reasons.

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::DbConn;
use super::schema::{contact_list_contacts, contact_list_rejects, contact_lists};
use crate::db_run;
use crate::error::Result;
use crate::values::{ContactListId, ProjectId};

pub const PROCESSING: &str = "processing";
pub const SUCCESS: &str = "success";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = contact_lists)]
pub struct ContactListRow {
    pub id: ContactListId,
    pub project_id: ProjectId,
    pub name: String,
    pub source_type: String,
    pub progress: String,
    pub node_id: String,
    pub rows_total: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub duplicates: i64,
    pub variables: String,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = contact_list_contacts)]
pub struct ContactRow {
    pub list_id: ContactListId,
    pub phone: String,
    pub full_name: String,
    pub variables: String,
    pub row_no: i64,
}

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = contact_list_rejects)]
pub struct RejectRow {
    pub list_id: ContactListId,
    pub row_no: i64,
    pub phone: String,
    pub reason: String,
}

/// Counts of an import so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub rows_total: i64,
    pub accepted: i64,
    pub rejected: i64,
    pub duplicates: i64,
}

pub fn insert(conn: &mut DbConn, row: &ContactListRow) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(contact_lists::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

pub fn get(
    conn: &mut DbConn,
    project_id: &ProjectId,
    id: &ContactListId,
) -> Result<Option<ContactListRow>> {
    Ok(db_run!(conn, |c| contact_lists::table
        .filter(contact_lists::id.eq(id))
        .filter(contact_lists::project_id.eq(project_id))
        .select(ContactListRow::as_select())
        .first(c)
        .optional())?)
}

/// A page of a project's lists, oldest first, and how many there are.
pub fn list(
    conn: &mut DbConn,
    project_id: &ProjectId,
    skip: i64,
    limit: i64,
) -> Result<(Vec<ContactListRow>, i64)> {
    Ok(db_run!(conn, |c| {
        let total: i64 = contact_lists::table
            .filter(contact_lists::project_id.eq(project_id))
            .count()
            .get_result(c)?;
        let rows = contact_lists::table
            .filter(contact_lists::project_id.eq(project_id))
            .order((contact_lists::created_at.asc(), contact_lists::id.asc()))
            .offset(skip)
            .limit(limit)
            .select(ContactListRow::as_select())
            .load(c)?;
        Ok::<_, diesel::result::Error>((rows, total))
    })?)
}

/// One batch of an import, in one transaction: its contacts (merged by number), its refused
/// rows, and the list's counts so far.
pub fn write_batch(
    conn: &mut DbConn,
    id: &ContactListId,
    contacts: &[ContactRow],
    rejects: &[RejectRow],
    counts: Counts,
    now: i64,
) -> Result<()> {
    conn.transaction(|conn| {
        match conn {
            // diesel has no multi-row upsert on SQLite: one statement per row (prepared once)
            // in this one transaction.
            DbConn::Sqlite(c) => {
                for row in contacts {
                    diesel::insert_into(contact_list_contacts::table)
                        .values(row)
                        .on_conflict((contact_list_contacts::list_id, contact_list_contacts::phone))
                        .do_update()
                        .set((
                            contact_list_contacts::full_name.eq(&row.full_name),
                            contact_list_contacts::variables.eq(&row.variables),
                            contact_list_contacts::row_no.eq(row.row_no),
                        ))
                        .execute(c)?;
                }
            }
            DbConn::Postgres(c) if !contacts.is_empty() => {
                diesel::insert_into(contact_list_contacts::table)
                    .values(contacts)
                    .on_conflict((contact_list_contacts::list_id, contact_list_contacts::phone))
                    .do_update()
                    .set((
                        contact_list_contacts::full_name
                            .eq(excluded(contact_list_contacts::full_name)),
                        contact_list_contacts::variables
                            .eq(excluded(contact_list_contacts::variables)),
                        contact_list_contacts::row_no.eq(excluded(contact_list_contacts::row_no)),
                    ))
                    .execute(c)?;
            }
            DbConn::Postgres(_) => {}
        }
        if !rejects.is_empty() {
            db_run!(conn, |c| diesel::insert_into(contact_list_rejects::table)
                .values(rejects)
                .execute(c))?;
        }
        set_counts(conn, id, counts, now)
    })
}

fn set_counts(conn: &mut DbConn, id: &ContactListId, n: Counts, now: i64) -> Result<()> {
    db_run!(conn, |c| diesel::update(contact_lists::table.find(id))
        .set((
            contact_lists::rows_total.eq(n.rows_total),
            contact_lists::accepted.eq(n.accepted),
            contact_lists::rejected.eq(n.rejected),
            contact_lists::duplicates.eq(n.duplicates),
            contact_lists::updated_at.eq(now),
        ))
        .execute(c))?;
    Ok(())
}

/// The import's end: `success` with its variable columns, or `failed` with why.
pub fn finish(
    conn: &mut DbConn,
    id: &ContactListId,
    variables: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    let progress = if error.is_some() { FAILED } else { SUCCESS };
    db_run!(conn, |c| diesel::update(contact_lists::table.find(id))
        .set((
            contact_lists::progress.eq(progress),
            contact_lists::variables.eq(variables),
            contact_lists::error_message.eq(error),
            contact_lists::updated_at.eq(now),
            contact_lists::finished_at.eq(now),
        ))
        .execute(c))?;
    Ok(())
}

/// Imports this node left unfinished (it stopped while they ran) are failed.
pub fn fail_interrupted(conn: &mut DbConn, node_id: &str, now: i64) -> Result<usize> {
    Ok(db_run!(conn, |c| diesel::update(
        contact_lists::table
            .filter(contact_lists::node_id.eq(node_id))
            .filter(contact_lists::progress.eq(PROCESSING)),
    )
    .set((
        contact_lists::progress.eq(FAILED),
        contact_lists::error_message
            .eq("the import was interrupted by a restart; upload the file again"),
        contact_lists::updated_at.eq(now),
        contact_lists::finished_at.eq(now),
    ))
    .execute(c))?)
}

/// The first refused rows of a list, in row order.
pub fn rejects(conn: &mut DbConn, id: &ContactListId, limit: i64) -> Result<Vec<RejectRow>> {
    Ok(db_run!(conn, |c| contact_list_rejects::table
        .filter(contact_list_rejects::list_id.eq(id))
        .order(contact_list_rejects::row_no.asc())
        .limit(limit)
        .select(RejectRow::as_select())
        .load(c))?)
}

/// A page of a list's contacts by number, after `after` (keyset).
pub fn contacts(
    conn: &mut DbConn,
    id: &ContactListId,
    after: &str,
    limit: i64,
) -> Result<Vec<ContactRow>> {
    Ok(db_run!(conn, |c| contact_list_contacts::table
        .filter(contact_list_contacts::list_id.eq(id))
        .filter(contact_list_contacts::phone.gt(after))
        .order(contact_list_contacts::phone.asc())
        .limit(limit)
        .select(ContactRow::as_select())
        .load(c))?)
}
