//! A campaign's header media (see the `broadcast_media` migration): one row per campaign and
//! URL, claimed by the node that fetches it, then `ready` with the stored file every
//! recipient's message references, or `retry` / `failed` with why.

use diesel::prelude::*;

use super::DbConn;
use super::media::NewMedia;
use super::schema::{broadcast_media, media};
use crate::db_run;
use crate::error::Result;
use crate::values::ProjectId;

pub const FETCHING: &str = "fetching";
pub const RETRY: &str = "retry";
pub const READY: &str = "ready";
pub const FAILED: &str = "failed";

/// The campaign states that may still send: their header media is kept past the media
/// retention.
pub const UNFINISHED: [&str; 3] = [
    super::broadcasts::SCHEDULED,
    super::broadcasts::RUNNING,
    super::broadcasts::PAUSED,
];

#[derive(Debug, Clone, Queryable)]
pub struct HeaderMediaRow {
    pub state: String,
    pub media_id: Option<String>,
    pub attempts: i32,
    pub retry_at: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

pub fn get(conn: &mut DbConn, broadcast_id: &str, url: &str) -> Result<Option<HeaderMediaRow>> {
    Ok(db_run!(conn, |c| broadcast_media::table
        .find((broadcast_id, url))
        .select((
            broadcast_media::state,
            broadcast_media::media_id,
            broadcast_media::attempts,
            broadcast_media::retry_at,
            broadcast_media::error_code,
            broadcast_media::error_message,
        ))
        .first(c)
        .optional())?)
}

/// Claims the fetch for `node` until `lease_until`: the first claim creates the row, a later
/// one takes a row whose retry time (or a dead fetcher's lease) has come. Returns the attempt
/// number when claimed, `None` when another node holds it or its time has not come.
pub fn claim(
    conn: &mut DbConn,
    broadcast_id: &str,
    url: &str,
    node: &str,
    now: i64,
    lease_until: i64,
) -> Result<Option<i32>> {
    conn.transaction(|conn| {
        let created = db_run!(conn, |c| diesel::insert_into(broadcast_media::table)
            .values((
                broadcast_media::broadcast_id.eq(broadcast_id),
                broadcast_media::url.eq(url),
                broadcast_media::state.eq(FETCHING),
                broadcast_media::attempts.eq(1),
                broadcast_media::retry_at.eq(lease_until),
                broadcast_media::claimed_by.eq(node),
                broadcast_media::updated_at.eq(now),
            ))
            .on_conflict_do_nothing()
            .execute(c))?;
        if created == 1 {
            return Ok(Some(1));
        }
        let row = broadcast_media::table
            .find((broadcast_id, url))
            .filter(broadcast_media::state.eq_any([FETCHING, RETRY]))
            .filter(broadcast_media::retry_at.le(now));
        let taken = db_run!(conn, |c| diesel::update(row)
            .set((
                broadcast_media::state.eq(FETCHING),
                broadcast_media::attempts.eq(broadcast_media::attempts + 1),
                broadcast_media::retry_at.eq(lease_until),
                broadcast_media::claimed_by.eq(node),
                broadcast_media::updated_at.eq(now),
            ))
            .execute(c))?;
        if taken == 0 {
            return Ok(None);
        }
        Ok(get(conn, broadcast_id, url)?.map(|r| r.attempts))
    })
}

/// The fetch succeeded: the row `ready` and the file (when it is a new one) stored, in one
/// transaction, if `node` still holds the claim (`false`: another node took the fetch over,
/// and its outcome stands).
pub fn ready(
    conn: &mut DbConn,
    broadcast_id: &str,
    url: &str,
    node: &str,
    file: Option<&NewMedia>,
    media_id: &str,
    now: i64,
) -> Result<bool> {
    conn.transaction(|conn| {
        let n = db_run!(conn, |c| diesel::update(
            broadcast_media::table
                .find((broadcast_id, url))
                .filter(broadcast_media::claimed_by.eq(node))
                .filter(broadcast_media::state.eq(FETCHING))
        )
        .set((
            broadcast_media::state.eq(READY),
            broadcast_media::media_id.eq(media_id),
            broadcast_media::error_code.eq(None::<String>),
            broadcast_media::error_message.eq(None::<String>),
            broadcast_media::updated_at.eq(now),
        ))
        .execute(c))?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(m) = file {
            db_run!(conn, |c| diesel::insert_into(media::table)
                .values(m)
                .execute(c))?;
        }
        Ok(true)
    })
}

/// The fetch failed with `(code, message)`: `retry` at `retry_at`, or `failed` for good when
/// `retry_at` is `None`.
pub fn fetch_failed(
    conn: &mut DbConn,
    broadcast_id: &str,
    url: &str,
    node: &str,
    (code, message): (&str, &str),
    retry_at: Option<i64>,
    now: i64,
) -> Result<()> {
    db_run!(conn, |c| diesel::update(
        broadcast_media::table
            .find((broadcast_id, url))
            .filter(broadcast_media::claimed_by.eq(node))
            .filter(broadcast_media::state.eq(FETCHING))
    )
    .set((
        broadcast_media::state.eq(if retry_at.is_some() { RETRY } else { FAILED }),
        broadcast_media::retry_at.eq(retry_at.unwrap_or(now)),
        broadcast_media::error_code.eq(code),
        broadcast_media::error_message.eq(message),
        broadcast_media::updated_at.eq(now),
    ))
    .execute(c))?;
    Ok(())
}

/// A project's media file (type, name, bytes), unless its bytes were dropped.
pub fn project_file(
    conn: &mut DbConn,
    project_id: &ProjectId,
    media_id: &str,
) -> Result<Option<super::media::MediaBlob>> {
    Ok(db_run!(conn, |c| media::table
        .filter(media::id.eq(media_id))
        .filter(media::project_id.eq(project_id))
        .filter(media::purged_at.is_null())
        .select((media::mime_type, media::filename, media::data))
        .first(c)
        .optional())?)
}
