//! Persistence on diesel: SQLite (embedded default) and PostgreSQL (production, several
//! nodes), one module per aggregate: `messages` (with `messages::queue`, every status
//! transition), `media`, `inbound`, `sessions`, `devices` (whatsapp-rust's device store),
//! `projects`, `accounts`, `webhooks`, `events` (the event log and its outbox) and `accept`
//! (the group-committed accept path).
//!
//! Every query is written once and compiled for both backends through
//! [`db_run!`]`(conn, |c| …)`; the few statements that differ (row locks, `SKIP LOCKED`) are
//! an explicit `match conn.backend()` (or on [`DbConn`] where the inner connection is
//! needed). Long raw SQL lives in `src/storage/sql/*.sql`, written with `$n` placeholders and
//! run through [`DbConn::portable_sql`]. Blocking diesel calls run on the blocking pool via
//! [`Db::run`].

pub mod accept;
pub mod accounts;
pub mod broadcast_media;
pub mod broadcasts;
pub mod cluster;
pub mod contact_lists;
pub mod devices;
pub mod durable;
pub mod events;
pub mod health;
pub mod inbound;
pub mod media;
pub mod messages;
pub mod number_checks;
pub mod pacing;
pub mod projects;
pub mod schema;
pub mod sessions;
pub mod suppressions;
pub mod templates;
pub mod webhooks;

use diesel::Connection;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

use crate::error::{Error, Result};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Runs `body` with `c` bound to the inner connection of either backend, compiling it once
/// per backend: `db_run!(conn, |c| users::table.load(c))`. Written like a closure so rustfmt
/// formats the body; it is not one (no capture, `?` returns from the enclosing function).
#[macro_export]
macro_rules! db_run {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::storage::DbConn::Sqlite($c) => $body,
            $crate::storage::DbConn::Postgres($c) => $body,
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub enum DbConn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl DbConn {
    pub fn backend(&self) -> Backend {
        match self {
            DbConn::Sqlite(_) => Backend::Sqlite,
            DbConn::Postgres(_) => Backend::Postgres,
        }
    }

    /// A raw statement for this connection's backend. Raw SQL is written once, with
    /// PostgreSQL's `$1, $2, …` placeholders; SQLite numbers its parameters `?1, ?2, …`, so
    /// there each `$n` outside quotes and comments becomes `?n` (a number may repeat, as in
    /// PostgreSQL). Anything else that differs between the dialects is an explicit
    /// `match conn.backend()` at the call site.
    pub fn portable_sql(&self, sql: &'static str) -> Cow<'static, str> {
        match self.backend() {
            Backend::Postgres => Cow::Borrowed(sql),
            Backend::Sqlite => Cow::Owned(numbered_question_marks(sql)),
        }
    }

    /// A read-write transaction. On SQLite it is `BEGIN IMMEDIATE`, so the write lock is taken
    /// up front and concurrent writers queue on `busy_timeout` instead of failing mid-way.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut DbConn) -> Result<T>) -> Result<T> {
        self.transaction_with(f)
    }

    /// [`Self::transaction`] with an error of the caller's, e.g. diesel's own to judge the
    /// failure by.
    pub fn transaction_with<T, E: From<diesel::result::Error>>(
        &mut self,
        f: impl FnOnce(&mut DbConn) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.transaction_as(false, f)
    }

    /// [`Self::transaction`] whose commit does not wait for the disk, for what a replay
    /// repairs (see [`Db::run_relaxed`]). On PostgreSQL the setting is local to the
    /// transaction and goes with its `BEGIN`, so it costs no round trip of its own (the
    /// connection's setting before and after is untouched). Nested in another transaction it
    /// is a savepoint, and the outer transaction's commit decides.
    pub fn relaxed_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut DbConn) -> Result<T>,
    ) -> Result<T> {
        let nested = db_run!(self, |c| {
            AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth()
        })?
        .is_some();
        // SQLite refuses to change the setting inside a transaction; PostgreSQL's is local.
        if nested || self.backend() == Backend::Postgres {
            return self.transaction_as(true, f);
        }
        // SQLite: in-process, the pragma costs no round trip.
        relax_commits(self, true)?;
        let out = self.transaction_as(true, f);
        let restored = relax_commits(self, false);
        let out = out?;
        restored.map(|()| out)
    }

    fn transaction_as<T, E: From<diesel::result::Error>>(
        &mut self,
        relaxed: bool,
        f: impl FnOnce(&mut DbConn) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        // Nested in a transaction (a fenced write around a storage call): a savepoint.
        let nested = db_run!(self, |c| {
            AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth()
        })?
        .is_some();
        match self {
            DbConn::Sqlite(c) if !nested => {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
            }
            DbConn::Postgres(c) if !nested && relaxed => {
                AnsiTransactionManager::begin_transaction_sql(
                    c,
                    "BEGIN; SET LOCAL synchronous_commit TO off",
                )?
            }
            DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction(c)?,
            DbConn::Postgres(c) => AnsiTransactionManager::begin_transaction(c)?,
        }
        match f(self) {
            Ok(value) => {
                db_run!(self, |c| AnsiTransactionManager::commit_transaction(c))?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) =
                    db_run!(self, |c| AnsiTransactionManager::rollback_transaction(c))
                {
                    tracing::warn!(error = %rollback, "rollback failed");
                }
                Err(e)
            }
        }
    }
}

/// `sql` with each `$n` placeholder written `?n`; quoted text (`'…'`, `"…"`) and comments
/// (`-- …`, `/* … */`) are copied as they are.
fn numbered_question_marks(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.chars().peekable();
    while let Some(ch) = rest.next() {
        out.push(ch);
        let end = match ch {
            '\'' | '"' => ch,
            '-' if rest.peek() == Some(&'-') => '\n',
            '/' if rest.peek() == Some(&'*') => '/',
            '$' if rest.peek().is_some_and(char::is_ascii_digit) => {
                out.pop();
                out.push('?');
                continue;
            }
            _ => continue,
        };
        // Inside quotes or a comment: copy up to and including its end. A doubled quote
        // (`'it''s'`) ends and reopens the literal, which copies the same way.
        if end == '/' {
            out.push(rest.next().expect("peeked"));
        }
        while let Some(c) = rest.next() {
            out.push(c);
            let closed = match end {
                '/' => c == '*' && rest.peek() == Some(&'/'),
                _ => c == end,
            };
            if closed {
                if end == '/' {
                    out.push(rest.next().expect("peeked"));
                }
                break;
            }
        }
    }
    out
}

/// r2d2 manager that opens the backend the URL names, never guessing by trial.
#[derive(Debug, Clone)]
pub struct Manager {
    backend: Backend,
    url: String,
}

impl Manager {
    fn open(&self) -> std::result::Result<DbConn, diesel::ConnectionError> {
        match self.backend {
            Backend::Sqlite => {
                let mut c = SqliteConnection::establish(&self.url)?;
                // WAL lets readers run beside the single writer; synchronous=FULL makes each
                // commit durable before a 201 is answered (group commit amortises the fsync).
                // busy_timeout first: switching to WAL needs a lock another connection
                // (e.g. a server closing on the same file) may still hold for a moment.
                c.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                )
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConn::Sqlite(c))
            }
            Backend::Postgres => {
                let mut c = PgConnection::establish(&self.url)?;
                // Our transactions never wait on anything but their own statements. One left
                // open by a process that stopped (SIGSTOP, a frozen VM) would hold its row
                // locks, and a lease row it holds blocks the node taking the session over:
                // the server ends such a session quickly instead.
                c.batch_execute("SET idle_in_transaction_session_timeout = '2s'")
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConn::Postgres(c))
            }
        }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> std::result::Result<DbConn, r2d2::Error> {
        self.open().map_err(r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConn) -> std::result::Result<(), r2d2::Error> {
        db_run!(conn, |c| c.ping())
            .map(|_| ())
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        db_run!(conn, |c| c.is_broken())
    }
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// The database handle the whole service shares.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    manager: Manager,
    /// Bumped after a [`Db::run`] that recorded events returns (i.e. after its commit): wakes
    /// webhook delivery and event streams on this node at once. Other nodes poll.
    events: Arc<watch::Sender<u64>>,
    /// The shared wait for the disk (see [`durable::GroupFlush`]), set up at first use.
    durable: Arc<OnceLock<Arc<durable::GroupFlush>>>,
}

thread_local! {
    static EVENT_WRITTEN: Cell<bool> = const { Cell::new(false) };
}

/// Marks that the work running on this thread recorded an event (see [`Db::run`]).
pub(crate) fn note_event_written() {
    EVENT_WRITTEN.with(|f| f.set(true));
}

/// A database URL taken apart: which backend, and the string its diesel driver expects
/// (a PostgreSQL URL as given, a SQLite file path without its `sqlite:` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    pub backend: Backend,
    pub target: String,
}

/// Splits a database URL into backend and the string diesel's driver expects.
pub fn parse_url(url: &str) -> DatabaseUrl {
    let (backend, target) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (Backend::Postgres, url)
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        (Backend::Sqlite, path)
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        (Backend::Sqlite, path)
    } else {
        (Backend::Sqlite, url)
    };
    DatabaseUrl {
        backend,
        target: target.to_owned(),
    }
}

impl Db {
    pub fn open(url: &str, pool_size: u32) -> Result<Db> {
        let DatabaseUrl {
            backend,
            target: url,
        } = parse_url(url);
        if backend == Backend::Sqlite {
            restrict_sqlite_files(&url)?;
        }
        let manager = Manager { backend, url };
        // A first connection up front so a bad URL fails fast with a clear message.
        manager
            .open()
            .map_err(|e| Error::Unavailable(format!("cannot open database: {e}")))?;
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(2))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager.clone())
            .map_err(|e| Error::Unavailable(format!("cannot open database pool: {e}")))?;
        Ok(Db {
            pool,
            manager,
            events: Arc::new(watch::channel(0).0),
            durable: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.manager.backend
    }

    #[cfg(test)]
    pub(crate) fn manager(&self) -> &Manager {
        &self.manager
    }

    /// The database's shared wait for the disk.
    pub(crate) fn group_flush(&self) -> Result<Arc<durable::GroupFlush>> {
        if let Some(g) = self.durable.get() {
            return Ok(g.clone());
        }
        let mut conn = self.get()?;
        let mode = durable::Mode::of(&mut conn)?;
        let group = Arc::new(durable::GroupFlush::new(mode.flusher(&self.manager)));
        Ok(self.durable.get_or_init(|| group).clone())
    }

    /// Returns once every commit made on this database before the call is on disk (one
    /// flush shared by all who wait at once): after [`Db::run_relaxed`] for a write that
    /// must be durable before the caller acts on it, without holding anything meanwhile.
    pub async fn make_durable(&self) -> Result<()> {
        let group = self.group_flush()?;
        tokio::task::spawn_blocking(move || group.flush())
            .await
            .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
    }

    /// Applies pending migrations of this backend; returns how many ran.
    pub fn migrate(&self) -> Result<usize> {
        let mut conn = self.connect()?;
        let applied = db_run!(&mut conn, |c| {
            let set = match self.manager.backend {
                Backend::Sqlite => SQLITE_MIGRATIONS,
                Backend::Postgres => POSTGRES_MIGRATIONS,
            };
            c.run_pending_migrations(set).map(|v| v.len())
        })
        .map_err(|e| Error::Internal(format!("migrations failed: {e}")))?;
        Ok(applied)
    }

    /// A connection outside the pool, for long-lived writers.
    pub fn connect(&self) -> Result<DbConn> {
        self.manager
            .open()
            .map_err(|e| Error::Unavailable(format!("cannot open database: {e}")))
    }

    pub fn get(&self) -> Result<PooledConn> {
        Ok(self.pool.get()?)
    }

    /// Runs blocking diesel work on tokio's blocking pool with a pooled connection.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            EVENT_WRITTEN.with(|f| f.set(false));
            let mut conn = pool.get()?;
            let out = f(&mut conn);
            if EVENT_WRITTEN.with(|f| f.replace(false)) {
                events.send_modify(|n| *n = n.wrapping_add(1));
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
    }

    /// [`Db::run`] for writes a crash of the machine may take back, because replaying them
    /// repairs the loss: a session's queue transitions after its claim (a lost one sends the
    /// message again under the same WhatsApp id, which receivers de-duplicate), receipts,
    /// acks, the WhatsApp device store (the protocol re-keys). Their commits do not wait for
    /// the disk (SQLite `synchronous = NORMAL`, PostgreSQL `synchronous_commit = off`), so
    /// a session's steady traffic does not pay one fsync per step; a crash of the process
    /// alone loses nothing, and the next durable commit makes them durable too.
    pub async fn run_relaxed<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T> + Send + 'static,
    {
        self.run(move |c| {
            relax_commits(c, true)?;
            let out = f(c);
            let restored = relax_commits(c, false);
            let out = out?;
            restored.map(|()| out)
        })
        .await
    }

    /// Changes whenever events were recorded on this node.
    pub fn event_signal(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }
}

/// Switches a pooled connection's commits between not waiting for the disk and waiting.
pub(crate) fn relax_commits(conn: &mut DbConn, relaxed: bool) -> Result<()> {
    use diesel::connection::SimpleConnection;
    let sql = match (&conn, relaxed) {
        (DbConn::Sqlite(_), true) => "PRAGMA synchronous = NORMAL",
        (DbConn::Sqlite(_), false) => "PRAGMA synchronous = FULL",
        (DbConn::Postgres(_), true) => "SET synchronous_commit TO off",
        (DbConn::Postgres(_), false) => "SET synchronous_commit TO on",
    };
    Ok(db_run!(conn, |c| c.batch_execute(sql))?)
}

/// Makes the SQLite database owner-only (0600): it holds the sealed secrets and everything
/// else of the service. A missing file is created 0600 before SQLite opens it, and SQLite gives
/// the `-wal` and `-shm` files it creates later the mode of the main file; existing files
/// with broader modes (from older versions) are tightened. URI filenames (`file:…`) and
/// in-memory databases are left to SQLite.
#[cfg(unix)]
fn restrict_sqlite_files(path: &str) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::Unavailable(format!(
                "cannot create database {path}: {e}"
            )));
        }
    }
    for file in [
        path.to_owned(),
        format!("{path}-wal"),
        format!("{path}-shm"),
    ] {
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "cannot check database file mode");
                continue;
            }
        };
        if mode & 0o077 != 0 {
            // Not fatal (e.g. a file owned by another user): the service still runs, loudly.
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)) {
                Ok(()) => tracing::info!(file = %file, "restricted database file to owner-only"),
                Err(e) => {
                    tracing::warn!(file = %file, error = %e, "cannot restrict database file to owner-only")
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_sqlite_files(_path: &str) -> Result<()> {
    Ok(())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::numbered_question_marks as sqlite;

    #[test]
    fn portable_sql_numbers_sqlite_placeholders() {
        assert_eq!(
            sqlite("UPDATE t SET a = $3 WHERE b = $1 AND c <= $12 AND d > $1"),
            "UPDATE t SET a = ?3 WHERE b = ?1 AND c <= ?12 AND d > ?1"
        );
        // Quoted text and comments stay as written, even with quotes or `$n` inside.
        assert_eq!(
            sqlite("SELECT '$1', 'it''s $2', \"$3\" FROM t -- don't touch $4\nWHERE x = $5"),
            "SELECT '$1', 'it''s $2', \"$3\" FROM t -- don't touch $4\nWHERE x = ?5"
        );
        assert_eq!(
            sqlite("x = $1 /* row's lock: $2 */ AND y = $2"),
            "x = ?1 /* row's lock: $2 */ AND y = ?2"
        );
        // A `$` that is no placeholder, and a dangling quote or comment, end the same way.
        assert_eq!(sqlite("a$b $ $x"), "a$b $ $x");
        assert_eq!(sqlite("x = $1 -- $2"), "x = ?1 -- $2");
        assert_eq!(sqlite("x = '$1"), "x = '$1");
        assert_eq!(sqlite("/* $1"), "/* $1");
    }

    #[test]
    fn stored_statements_keep_their_placeholders_on_sqlite() {
        for sql in [
            include_str!("sql/claim.sql"),
            include_str!("sql/msg_secret_upsert.sql"),
            include_str!("sql/tc_token_touch_sender.sql"),
            include_str!("sql/tc_token_store_received.sql"),
        ] {
            let code: String = sql.lines().filter(|l| !l.starts_with("--")).collect();
            let out: String = sqlite(sql)
                .lines()
                .filter(|l| !l.starts_with("--"))
                .collect();
            assert!(code.contains("$1") && !out.contains('$'), "{out}");
            assert_eq!(out.matches('?').count(), code.matches('$').count());
        }
    }
}
