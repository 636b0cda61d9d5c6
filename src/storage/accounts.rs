//! SAK accounts: users (each owns one project), their user API keys, and finding a session
//! by its own API key. Passwords and keys are stored only as hashes, so every lookup here is
//! by hash; the domain hashes what a client presents.

use diesel::prelude::*;

use super::DbConn;
use super::schema::{devices, user_api_keys, users};
use super::sessions::SessionRow;
use crate::db_run;
use crate::error::{Error, Result};
use crate::values::{ProjectId, SessionId};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub project_id: ProjectId,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_api_keys)]
pub struct UserKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub created_at: i64,
}

pub fn insert_user(conn: &mut DbConn, row: &UserRow) -> Result<()> {
    match db_run!(conn, |c| diesel::insert_into(users::table)
        .values(row)
        .execute(c))
    {
        Ok(_) => Ok(()),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Err(Error::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

pub fn user_by_email(conn: &mut DbConn, email: &str) -> Result<Option<UserRow>> {
    Ok(db_run!(conn, |c| users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(c)
        .optional())?)
}

pub fn user_by_id(conn: &mut DbConn, id: &str) -> Result<Option<UserRow>> {
    Ok(db_run!(conn, |c| users::table
        .find(id)
        .select(UserRow::as_select())
        .first(c)
        .optional())?)
}

pub fn insert_user_key(conn: &mut DbConn, row: &UserKeyRow) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(user_api_keys::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

pub fn list_user_keys(conn: &mut DbConn, user_id: &str) -> Result<Vec<UserKeyRow>> {
    Ok(db_run!(conn, |c| user_api_keys::table
        .filter(user_api_keys::user_id.eq(user_id))
        .order(user_api_keys::created_at.asc())
        .select(UserKeyRow::as_select())
        .load(c))?)
}

/// The user a user API key belongs to.
pub fn user_by_key_hash(conn: &mut DbConn, hash: &str) -> Result<Option<UserRow>> {
    Ok(db_run!(conn, |c| user_api_keys::table
        .inner_join(users::table)
        .filter(user_api_keys::key_hash.eq(hash))
        .select(UserRow::as_select())
        .first(c)
        .optional())?)
}

pub fn session_by_key_hash(conn: &mut DbConn, hash: &str) -> Result<Option<SessionRow>> {
    Ok(db_run!(conn, |c| devices::table
        .filter(devices::session_key_hash.eq(hash))
        .select(SessionRow::as_select())
        .first(c)
        .optional())?)
}

pub fn set_session_key(conn: &mut DbConn, device_id: &SessionId, hash: &str) -> Result<()> {
    db_run!(conn, |c| diesel::update(devices::table.find(device_id))
        .set(devices::session_key_hash.eq(hash))
        .execute(c))?;
    Ok(())
}
