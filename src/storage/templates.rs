//! Broadcast templates: one row per template, its language variants kept as one JSON
//! document (`variants`), since a template is always read and written whole. Listed
//! oldest first, by `(created_at, id)`.

use diesel::prelude::*;

use super::DbConn;
use super::schema::templates;
use crate::db_run;
use crate::error::{Error, Result};
use crate::values::{ProjectId, TemplateId};

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = templates)]
pub struct TemplateRow {
    pub id: TemplateId,
    pub project_id: ProjectId,
    pub name: String,
    pub category: String,
    pub status: String,
    /// JSON array of the language variants (`domain::broadcasts::templates::Variant`).
    pub variants: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn taken(e: diesel::result::Error) -> Error {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => Error::TemplateNameTaken,
        e => e.into(),
    }
}

pub fn insert(conn: &mut DbConn, row: &TemplateRow) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(templates::table)
        .values(row)
        .execute(c))
    .map_err(taken)?;
    Ok(())
}

pub fn get(
    conn: &mut DbConn,
    project_id: &ProjectId,
    id: &TemplateId,
) -> Result<Option<TemplateRow>> {
    Ok(db_run!(conn, |c| templates::table
        .filter(templates::id.eq(id))
        .filter(templates::project_id.eq(project_id))
        .select(TemplateRow::as_select())
        .first(c)
        .optional())?)
}

/// A page of a project's templates, oldest first (`skip` rows in), optionally only those whose
/// name contains `query`; with the count of all that match.
pub fn list(
    conn: &mut DbConn,
    project_id: &ProjectId,
    query: Option<&str>,
    skip: i64,
    limit: i64,
) -> Result<(Vec<TemplateRow>, i64)> {
    let pattern = query.map(|q| {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    Ok(db_run!(conn, |c| {
        let base = || {
            let mut q = templates::table
                .filter(templates::project_id.eq(project_id.to_owned()))
                .into_boxed();
            if let Some(p) = &pattern {
                q = q.filter(templates::name.like(p.clone()).escape('\\'));
            }
            q
        };
        let total: i64 = base().count().get_result(c)?;
        let rows = base()
            .order((templates::created_at.asc(), templates::id.asc()))
            .offset(skip)
            .limit(limit)
            .select(TemplateRow::as_select())
            .load(c)?;
        Ok::<_, diesel::result::Error>((rows, total))
    })?)
}

/// Replaces what a template says (name, category, variants); `None` when it is not there.
pub fn update(conn: &mut DbConn, row: &TemplateRow) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(
        templates::table
            .filter(templates::id.eq(&row.id))
            .filter(templates::project_id.eq(&row.project_id)),
    )
    .set((
        templates::name.eq(&row.name),
        templates::category.eq(&row.category),
        templates::variants.eq(&row.variants),
        templates::updated_at.eq(row.updated_at),
    ))
    .execute(c))
    .map_err(taken)?;
    Ok(n == 1)
}

pub fn delete(conn: &mut DbConn, project_id: &ProjectId, id: &TemplateId) -> Result<bool> {
    Ok(db_run!(conn, |c| diesel::delete(
        templates::table
            .filter(templates::id.eq(id))
            .filter(templates::project_id.eq(project_id)),
    )
    .execute(c))?
        == 1)
}
