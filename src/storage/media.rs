//! Media files: uploaded with outbound messages or received with inbound ones, served to the
//! project that owns them, and their bytes dropped after the retention period.

use diesel::prelude::*;

use super::DbConn;
use super::schema::{broadcast_media, broadcasts, media, messages};
use crate::db_run;
use crate::error::Result;
use crate::values::{MessageStatus, ProjectId};

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = media)]
pub struct NewMedia {
    pub id: String,
    pub project_id: ProjectId,
    pub sha256: String,
    pub mime_type: String,
    pub filename: Option<String>,
    pub size_bytes: i64,
    pub data: Vec<u8>,
    pub created_at: i64,
}

/// A stored media file.
#[derive(Debug, Clone, Queryable)]
pub struct MediaBlob {
    pub mime_type: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// Stores a media file on its own (an upload for later use).
pub fn insert(conn: &mut DbConn, row: &NewMedia) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(media::table)
        .values(row)
        .execute(c))?;
    Ok(())
}

/// A media file's bytes, unless they were dropped after the retention period.
pub fn media_bytes(conn: &mut DbConn, media_id: &str) -> Result<Option<MediaBlob>> {
    Ok(db_run!(conn, |c| media::table
        .find(media_id)
        .filter(media::purged_at.is_null())
        .select((media::mime_type, media::filename, media::data))
        .first(c)
        .optional())?)
}

/// A project's stored media file, and when its bytes were dropped (`None` while kept).
#[derive(Debug, Clone, Queryable)]
pub struct ProjectMedia {
    pub blob: MediaBlob,
    pub purged_at: Option<i64>,
}

/// A project's stored media file (the project check keeps tenants apart), with the time its
/// bytes were dropped if the retention period is over.
pub fn project_media(
    conn: &mut DbConn,
    project_id: &ProjectId,
    media_id: &str,
) -> Result<Option<ProjectMedia>> {
    Ok(db_run!(conn, |c| media::table
        .filter(media::id.eq(media_id))
        .filter(media::project_id.eq(project_id))
        .select((
            (media::mime_type, media::filename, media::data),
            media::purged_at
        ))
        .first(c)
        .optional())?)
}

/// Drops the bytes of up to `limit` media files stored before `before`, keeping those of
/// messages still waiting to be sent and the header media of campaigns that may still send;
/// the rows (type, size, digest) stay for history.
/// Returns how many were dropped.
pub fn purge_media(conn: &mut DbConn, before: i64, now: i64, limit: i64) -> Result<usize> {
    db_run!(conn, |c| {
        let waiting = messages::table
            .filter(messages::status.eq(MessageStatus::Queued))
            .filter(messages::media_id.is_not_null())
            .select(messages::media_id.assume_not_null());
        let campaigns = broadcast_media::table
            .inner_join(broadcasts::table)
            .filter(broadcasts::state.eq_any(super::broadcast_media::UNFINISHED))
            .filter(broadcast_media::media_id.is_not_null())
            .select(broadcast_media::media_id.assume_not_null());
        let ids: Vec<String> = media::table
            .filter(media::purged_at.is_null())
            .filter(media::created_at.lt(before))
            .filter(diesel::dsl::not(media::id.eq_any(waiting)))
            .filter(diesel::dsl::not(media::id.eq_any(campaigns)))
            .select(media::id)
            .limit(limit)
            .load(c)?;
        Ok(diesel::update(media::table.filter(media::id.eq_any(&ids)))
            .set((media::data.eq(Vec::<u8>::new()), media::purged_at.eq(now)))
            .execute(c)?)
    })
}
