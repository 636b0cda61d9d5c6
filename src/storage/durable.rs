//! Durability off the accept writers' path.
//!
//! A writer that waited for the disk at each commit would hold its place (and, on
//! PostgreSQL, the counter rows its batch locked) for the length of an fsync, and the next
//! batch could not start before. So the accept writers commit without waiting, and one
//! flusher waits for the disk after them, once for every commit made meanwhile, before any
//! of their callers is answered. A 201 still means the row is on disk.
//!
//! Rows are visible to other connections a moment before they are durable. Nothing acts
//! on that: a session claims a message in a transaction of its own that commits
//! synchronously, and that commit makes every earlier one durable too (both WAL files are
//! written in order), so no message is sent that a crash could still take back.

use diesel::connection::SimpleConnection;
use diesel::{QueryableByName, RunQueryDsl};
use std::fs::File;
use std::path::PathBuf;

use super::{Db, DbConn};
use crate::error::{Error, Result};

/// How the accept writers' commits are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PostgreSQL: commits do not wait for the WAL flush; the flusher's own synchronous
    /// commit of a transaction that writes WAL under an xid flushes the log up to its
    /// commit record, past every earlier one. An empty logical-decoding message is the
    /// smallest such write (no table; any role may emit it).
    Postgres,
    /// SQLite in WAL mode: commits at `synchronous = NORMAL` do not fsync; the flusher's
    /// fsync of the `-wal` file does (checkpoints sync it before they copy frames into the
    /// database and sync the database after, so frames a checkpoint moved are durable there).
    SqliteWal,
    /// The writers' own commits wait for the disk (an in-memory database, another journal
    /// mode): nothing to wait for after them.
    Synchronous,
}

#[derive(QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

impl Mode {
    /// Chooses how the commits made on `conn`'s database are made durable, and the flusher
    /// that does it.
    pub fn of(db: &Db, conn: &mut DbConn) -> Result<(Mode, Flusher)> {
        let c = match conn {
            DbConn::Postgres(_) => {
                return Ok((
                    Mode::Postgres,
                    Flusher::Postgres {
                        db: db.clone(),
                        conn: None,
                    },
                ));
            }
            DbConn::Sqlite(c) => c,
        };
        let mode: Vec<Text> =
            diesel::sql_query("SELECT journal_mode AS value FROM pragma_journal_mode").load(c)?;
        let file: Vec<Text> =
            diesel::sql_query("SELECT file AS value FROM pragma_database_list WHERE name = 'main'")
                .load(c)?;
        Ok(match (mode.first(), file.first()) {
            (Some(m), Some(f)) if m.value.eq_ignore_ascii_case("wal") && !f.value.is_empty() => (
                Mode::SqliteWal,
                Flusher::SqliteWal {
                    path: PathBuf::from(format!("{}-wal", f.value)),
                    file: None,
                },
            ),
            _ => (Mode::Synchronous, Flusher::Synchronous),
        })
    }

    /// Sets a writer connection (the first, or one opened after a failure) up to commit
    /// without waiting for the disk, where the flusher waits instead.
    pub fn prepare(self, writer: &mut DbConn) -> Result<()> {
        match (self, writer) {
            (Mode::Postgres, DbConn::Postgres(c)) => {
                c.batch_execute("SET synchronous_commit TO OFF")?
            }
            (Mode::SqliteWal, DbConn::Sqlite(c)) => {
                c.batch_execute("PRAGMA synchronous = NORMAL")?
            }
            _ => {}
        }
        Ok(())
    }
}

/// Waits for the disk on the writers' behalf.
pub enum Flusher {
    Postgres { db: Db, conn: Option<DbConn> },
    SqliteWal { path: PathBuf, file: Option<File> },
    Synchronous,
}

impl Flusher {
    /// Returns once every commit the writers made before the call is on disk.
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Flusher::Synchronous => Ok(()),
            Flusher::Postgres { db, conn } => {
                let c = match conn {
                    Some(c) => c,
                    None => conn.insert(db.connect()?),
                };
                let done = match c {
                    DbConn::Postgres(pg) => {
                        pg.batch_execute("SELECT pg_logical_emit_message(true, 'wagate.flush', '')")
                    }
                    DbConn::Sqlite(_) => Ok(()),
                };
                if let Err(e) = done {
                    // Opened again at the next flush: the connection may be the broken part.
                    *conn = None;
                    return Err(Error::Unavailable(format!("database: {e}")));
                }
                Ok(())
            }
            Flusher::SqliteWal { path, file } => {
                use std::os::unix::fs::MetadataExt;
                // A file the last connection to close deleted and a new one created is
                // another inode: sync the one the path names now.
                let current = std::fs::metadata(&*path).map_err(Error::internal)?.ino();
                let stale = match file {
                    Some(f) => f.metadata().map_err(Error::internal)?.ino() != current,
                    None => true,
                };
                if stale {
                    *file = Some(File::open(&*path).map_err(Error::internal)?);
                }
                file.as_ref()
                    .expect("opened above")
                    .sync_data()
                    .map_err(|e| Error::Unavailable(format!("fsync of the database log: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(QueryableByName)]
    struct Level {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        synchronous: i32,
    }

    fn synchronous(c: &mut DbConn) -> i32 {
        let DbConn::Sqlite(c) = c else { unreachable!() };
        diesel::sql_query("PRAGMA synchronous")
            .get_result::<Level>(c)
            .unwrap()
            .synchronous
    }

    /// A database file in WAL mode: only the writer's connection stops waiting for the disk
    /// (NORMAL = 1); every other connection keeps FULL (2), and the flusher syncs the log.
    #[test]
    fn sqlite_file_writers_leave_the_fsync_to_the_flusher() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("d.db").to_str().unwrap(), 2).unwrap();
        let mut writer = db.connect().unwrap();
        let (mode, mut flusher) = Mode::of(&db, &mut writer).unwrap();
        assert_eq!(mode, Mode::SqliteWal);
        mode.prepare(&mut writer).unwrap();
        assert_eq!(synchronous(&mut writer), 1);
        assert_eq!(synchronous(&mut db.connect().unwrap()), 2);
        let DbConn::Sqlite(c) = &mut writer else {
            unreachable!()
        };
        c.batch_execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        flusher.flush().unwrap();
        assert!(matches!(&flusher, Flusher::SqliteWal { file: Some(_), .. }));
    }

    /// In memory there is no log to sync: the writer's commits stay as they are.
    #[test]
    fn sqlite_in_memory_is_synchronous() {
        let db = Db::open(":memory:", 1).unwrap();
        let mut c = db.connect().unwrap();
        let (mode, mut flusher) = Mode::of(&db, &mut c).unwrap();
        assert_eq!(mode, Mode::Synchronous);
        flusher.flush().unwrap();
    }
}
