//! Durability off the accept writers' path.
//!
//! A writer that waited for the disk at each commit would hold its place (and, on
//! PostgreSQL, the counter rows its batch locked) for the length of an fsync, and the next
//! batch could not start before. So the accept writers commit without waiting, and one
//! flusher waits for the disk after them, once for every commit made meanwhile, before any
//! of their callers is answered. A 201 still means the row is on disk.
//!
//! Rows are visible to other connections a moment before they are durable. Nothing acts
//! on that: a session claims a message and waits for a flush after its claim before it
//! sends, and that flush makes every earlier commit durable too (both WAL files are written
//! in order), so no message is sent that a crash could still take back.
//!
//! The wait is shared ([`GroupFlush`]): the writers' flusher and every session write that
//! must be durable before the session acts (`Slot::write`) commit without waiting and then
//! join the next flush, so on SQLite nobody holds the write lock across an fsync.

use diesel::connection::SimpleConnection;
use diesel::{QueryableByName, RunQueryDsl};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use super::{DbConn, Manager};
use crate::error::{Error, Result};

/// How the accept writers' commits are made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// PostgreSQL: commits do not wait for the WAL flush; the flusher's own synchronous
    /// commit of a transaction that writes WAL under an xid flushes the log up to its
    /// commit record, past every earlier one. An empty logical-decoding message is the
    /// smallest such write (no table; any role may emit it).
    Postgres,
    /// SQLite in WAL mode: commits at `synchronous = NORMAL` do not fsync; the flusher's
    /// fsync of the `-wal` file does (checkpoints sync it before they copy frames into the
    /// database and sync the database after, so frames a checkpoint moved are durable there).
    /// Holds the path of the `-wal` file.
    SqliteWal(PathBuf),
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
    /// How the commits made on `conn`'s database are made durable.
    pub fn of(conn: &mut DbConn) -> Result<Mode> {
        let c = match conn {
            DbConn::Postgres(_) => return Ok(Mode::Postgres),
            DbConn::Sqlite(c) => c,
        };
        let mode: Vec<Text> =
            diesel::sql_query("SELECT journal_mode AS value FROM pragma_journal_mode").load(c)?;
        let file: Vec<Text> =
            diesel::sql_query("SELECT file AS value FROM pragma_database_list WHERE name = 'main'")
                .load(c)?;
        Ok(match (mode.first(), file.first()) {
            (Some(m), Some(f)) if m.value.eq_ignore_ascii_case("wal") && !f.value.is_empty() => {
                Mode::SqliteWal(PathBuf::from(format!("{}-wal", f.value)))
            }
            _ => Mode::Synchronous,
        })
    }

    /// The flusher that waits for the disk in this mode.
    pub fn flusher(&self, manager: &Manager) -> Flusher {
        match self {
            Mode::Postgres => Flusher::Postgres {
                manager: manager.clone(),
                conn: None,
            },
            Mode::SqliteWal(path) => Flusher::SqliteWal {
                path: path.clone(),
                file: None,
            },
            Mode::Synchronous => Flusher::Synchronous,
        }
    }

    /// Sets a writer connection (the first, or one opened after a failure) up to commit
    /// without waiting for the disk, where the flusher waits instead.
    pub fn prepare(&self, writer: &mut DbConn) -> Result<()> {
        match (self, writer) {
            (Mode::Postgres, DbConn::Postgres(c)) => {
                c.batch_execute("SET synchronous_commit TO OFF")?
            }
            (Mode::SqliteWal(_), DbConn::Sqlite(c)) => {
                c.batch_execute("PRAGMA synchronous = NORMAL")?
            }
            _ => {}
        }
        Ok(())
    }
}

/// Waits for the disk on the writers' behalf.
pub enum Flusher {
    Postgres {
        manager: Manager,
        conn: Option<DbConn>,
    },
    SqliteWal {
        path: PathBuf,
        file: Option<File>,
    },
    Synchronous,
}

impl Flusher {
    /// Returns once every commit the writers made before the call is on disk.
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Flusher::Synchronous => Ok(()),
            Flusher::Postgres { manager, conn } => {
                let c =
                    match conn {
                        Some(c) => c,
                        None => conn.insert(manager.open().map_err(|e| {
                            Error::Unavailable(format!("cannot open database: {e}"))
                        })?),
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

/// One wait for the disk on behalf of everyone waiting at once: the accept writers' flusher
/// and every session whose write must be durable before it acts on it (a claim before its
/// send, an inbound message before its ack). Those commit without waiting for the disk
/// (so, on SQLite, nobody holds the write lock across an fsync) and then call [`Self::flush`],
/// which returns once a flush that started after the call has finished: callers that arrive
/// while a flush runs share the next one.
pub struct GroupFlush {
    flusher: Mutex<Flusher>,
    tickets: Mutex<Tickets>,
    finished: Condvar,
}

#[derive(Default)]
struct Tickets {
    /// Requests so far; each caller's is its number.
    issued: u64,
    /// Every request up to this one is covered by a finished flush.
    covered: u64,
    /// A flush runs now.
    running: bool,
}

impl GroupFlush {
    pub fn new(flusher: Flusher) -> Self {
        GroupFlush {
            flusher: Mutex::new(flusher),
            tickets: Mutex::default(),
            finished: Condvar::new(),
        }
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, Tickets> {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once every commit made on the database before the call is on disk.
    pub fn flush(&self) -> Result<()> {
        let mut t = self.tickets();
        t.issued += 1;
        let mine = t.issued;
        loop {
            if t.covered >= mine {
                return Ok(());
            }
            if !t.running {
                // Everyone who asked before now is covered by this flush.
                t.running = true;
                let upto = t.issued;
                drop(t);
                let r = self
                    .flusher
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .flush();
                t = self.tickets();
                t.running = false;
                if r.is_ok() {
                    t.covered = t.covered.max(upto);
                }
                self.finished.notify_all();
                // On failure the others try their own flush.
                r?;
                continue;
            }
            t = self.finished.wait(t).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Db;

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
        let mode = Mode::of(&mut writer).unwrap();
        assert!(matches!(mode, Mode::SqliteWal(_)));
        let mut flusher = mode.flusher(db.manager());
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
        let mode = Mode::of(&mut c).unwrap();
        assert_eq!(mode, Mode::Synchronous);
        mode.flusher(db.manager()).flush().unwrap();
    }

    /// Many callers at once: each returns, none before a flush that covers its call.
    #[test]
    fn concurrent_callers_share_flushes() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("g.db").to_str().unwrap(), 2).unwrap();
        let group = db.group_flush().unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, done) = (group.clone(), done.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        group.flush().unwrap();
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(done.load(Ordering::Relaxed), 8);
        let t = group.tickets.lock().unwrap();
        assert_eq!((t.issued, t.covered), (400, 400));
        assert!(!t.running);
    }
}
