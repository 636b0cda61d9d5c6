//! Accepting messages: one transaction checks idempotency, charges the rate-limit and quota
//! counters and inserts the message, so a 201 is only ever answered for a committed message
//! and concurrent requests (on any number of nodes) cannot overshoot a limit.
//!
//! Requests are group-committed: writer threads take whatever is waiting (up to a batch
//! limit) and commit it in one transaction, without waiting for the disk; one flusher
//! makes the commits durable (`durable`) before their callers are answered, so a writer
//! runs its next batch while the last one's fsync is under way. On PostgreSQL each batch first locks the
//! counter rows of its projects in a fixed order, which serialises batches of one project
//! across nodes without deadlocks (idempotency keys are per project, so they are covered).
//!
//! A batch that fails is judged by its error. A transient one (serialization failure,
//! deadlock, lost connection, busy database) is tried again whole. Any other means the
//! database refuses something, most likely one item, and would refuse it again: the batch is
//! run once more at once with a savepoint per item, so only the refused item gets an error
//! and its neighbours (of any tenant) commit in that same round. Savepoints, not a
//! transaction per item: one commit (one WAL flush) per chunk instead of one per item, and
//! the bulk path, which has none, stays as fast as before.

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DbError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::durable::{GroupFlush, Mode};
use super::media::NewMedia;
use super::messages::NewMessage;
use super::schema::{idempotency_keys, media, messages, usage_counters};
use super::{Backend, Db, DbConn, now_ms};
use crate::db_run;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRow {
    pub project_id: ProjectId,
    pub key: String,
    pub fingerprint: String,
    pub message_id: String,
    pub expires_at: i64,
}

use crate::error::{Error, Result};
use crate::values::{MessageStatus, ProjectId};

#[derive(Debug, Clone)]
pub struct Limits {
    pub project_id: ProjectId,
    pub per_minute: i64,
    pub monthly: i64,
    pub suspended: bool,
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// Hash of the request's meaning; a reused key with another fingerprint is a conflict.
    pub fingerprint: String,
    pub ttl_ms: i64,
}

#[derive(Debug, Clone)]
pub struct AcceptItem {
    pub limits: Limits,
    pub idempotency: Option<IdempotencyKey>,
    pub media: Option<NewMedia>,
    pub message: NewMessage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Created {
        id: String,
        device_code: String,
    },
    /// The idempotency key was seen before: nothing was created.
    Replayed {
        id: String,
        device_code: String,
        status: MessageStatus,
    },
}

impl Accepted {
    pub fn id(&self) -> &str {
        match self {
            Accepted::Created { id, .. } | Accepted::Replayed { id, .. } => id,
        }
    }
}

fn month_bucket(now: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    format!("M{}", t.format("%Y%m"))
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    minute: i64,
    month: i64,
    dirty: bool,
}

const MINUTE_MS: i64 = 60_000;
const INSERT_CHUNK: usize = 200;
/// Items per transaction when a batch is run a savepoint per item. PostgreSQL caches 64
/// subtransaction ids per transaction; past that every other session's snapshots get slower.
const ISOLATED_CHUNK: usize = 64;
/// Tries of a batch (or an isolated chunk) that fails transiently.
const ATTEMPTS: u32 = 3;
/// What a client is told when the database refuses a value (the detail stays in the log).
const REFUSED_VALUE: &str = "the database refused a value of this message";

/// Why a batch did not commit; decides what happens next and what the clients are told.
#[derive(Debug)]
struct Failure {
    /// Worth trying again as it is.
    transient: bool,
    /// The database refused a value (a check, a not-null, a data exception): a 400.
    validation: bool,
    detail: String,
}

impl Failure {
    fn of(e: &DbError) -> Failure {
        Failure {
            transient: is_transient(e),
            validation: is_validation(e),
            detail: format!("database: {e}"),
        }
    }

    /// A failed transaction, judged once it is over: a connection left broken is transient
    /// whatever the error said.
    fn of_batch(conn: &mut DbConn, e: &DbError) -> Failure {
        let mut f = Failure::of(e);
        f.transient |= db_run!(conn, |c| diesel::r2d2::R2D2Connection::is_broken(c));
        f
    }

    fn error(&self) -> Error {
        if self.transient {
            Error::Unavailable(self.detail.clone())
        } else if self.validation {
            Error::InvalidRequest(REFUSED_VALUE.into())
        } else {
            Error::Internal(self.detail.clone())
        }
    }
}

/// Errors that say nothing about the data: trying the same again may well succeed. diesel
/// names only some kinds; the others are known by their (English) messages.
fn is_transient(e: &DbError) -> bool {
    const MARKERS: [&str; 10] = [
        "deadlock detected",
        "could not serialize",
        "database is locked",
        "database table is locked",
        "could not obtain lock",
        "canceling statement due to",
        "terminating connection",
        "server closed the connection",
        "no connection to the server",
        "the database system is",
    ];
    match e {
        DbError::DatabaseError(
            DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DbError::BrokenTransactionManager => true,
        DbError::DatabaseError(_, info) => {
            let m = info.message().to_ascii_lowercase();
            MARKERS.iter().any(|t| m.contains(t))
        }
        _ => false,
    }
}

/// The database refused a value of the item: the client's to fix, not ours.
fn is_validation(e: &DbError) -> bool {
    const MARKERS: [&str; 5] = [
        "invalid byte sequence",
        "unsupported unicode escape sequence",
        "untranslatable character",
        "value too long",
        "invalid input syntax",
    ];
    match e {
        DbError::DatabaseError(
            DatabaseErrorKind::CheckViolation | DatabaseErrorKind::NotNullViolation,
            _,
        ) => true,
        DbError::DatabaseError(_, info) => {
            let m = info.message().to_ascii_lowercase();
            MARKERS.iter().any(|t| m.contains(t))
        }
        _ => false,
    }
}

/// Runs one item's writes in a savepoint. An error the data caused is rolled back alone and
/// handed back as the item's (`Ok(Err)`); a transient error or a failed rollback ends the
/// whole transaction (`Err`).
fn in_savepoint(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> QueryResult<()>,
) -> QueryResult<std::result::Result<(), DbError>> {
    db_run!(&mut *conn, |c| AnsiTransactionManager::begin_transaction(c))?;
    match f(conn) {
        Ok(()) => {
            db_run!(&mut *conn, |c| AnsiTransactionManager::commit_transaction(
                c
            ))?;
            Ok(Ok(()))
        }
        Err(e) => {
            db_run!(
                &mut *conn,
                |c| AnsiTransactionManager::rollback_transaction(c)
            )?;
            if is_transient(&e) { Err(e) } else { Ok(Err(e)) }
        }
    }
}

/// Accepts a batch in one transaction; one outcome per item, in order.
pub fn accept_batch(
    conn: &mut DbConn,
    items: &[AcceptItem],
    now: i64,
) -> Result<Vec<Result<Accepted>>> {
    run(conn, items, now, false).map_err(|f| f.error())
}

/// One attempt at a batch: bulk, or (`isolated`) with a savepoint per item.
fn run(
    conn: &mut DbConn,
    items: &[AcceptItem],
    now: i64,
    isolated: bool,
) -> std::result::Result<Vec<Result<Accepted>>, Failure> {
    conn.transaction_with(|c| accept_in_tx(c, items, now, isolated))
        .map_err(|e| Failure::of_batch(conn, &e))
}

fn accept_in_tx(
    conn: &mut DbConn,
    items: &[AcceptItem],
    now: i64,
    isolated: bool,
) -> QueryResult<Vec<Result<Accepted>>> {
    let minute_bucket = format!("m{}", now / MINUTE_MS);
    let month_bucket = month_bucket(now);
    let mut project_ids: Vec<&str> = items.iter().map(|i| i.limits.project_id.as_str()).collect();
    project_ids.sort_unstable();
    project_ids.dedup();

    let mut counters: HashMap<String, Counter> = HashMap::new();
    for pid in project_ids {
        let seed = [
            (pid, minute_bucket.as_str(), now + 2 * MINUTE_MS),
            (pid, month_bucket.as_str(), now + 62 * 24 * 3600 * 1000),
        ];
        for (p, b, exp) in seed {
            db_run!(conn, |c| diesel::insert_into(usage_counters::table)
                .values((
                    usage_counters::project_id.eq(p),
                    usage_counters::bucket.eq(b),
                    usage_counters::count.eq(0i64),
                    usage_counters::expires_at.eq(exp),
                ))
                .on_conflict_do_nothing()
                .execute(c))?;
        }
        let buckets = [minute_bucket.as_str(), month_bucket.as_str()];
        let base = usage_counters::table
            .filter(usage_counters::project_id.eq(pid))
            .filter(usage_counters::bucket.eq_any(buckets))
            .order(usage_counters::bucket.asc())
            .select((usage_counters::bucket, usage_counters::count));
        let rows: Vec<(String, i64)> = match conn {
            DbConn::Postgres(c) => base.for_update().load(c)?,
            DbConn::Sqlite(c) => base.load(c)?,
        };
        let mut ctr = Counter {
            minute: 0,
            month: 0,
            dirty: false,
        };
        for (bucket, count) in rows {
            if bucket == minute_bucket {
                ctr.minute = count;
            } else {
                ctr.month = count;
            }
        }
        counters.insert(pid.to_owned(), ctr);
    }

    let mut outcomes = Vec::with_capacity(items.len());
    let mut seen: HashMap<(&str, &str), (&str, Accepted)> = HashMap::new();
    let mut new_messages: Vec<&NewMessage> = Vec::new();
    let mut new_keys: Vec<IdempotencyRow> = Vec::new();
    let mut expired_keys: Vec<(&str, &str)> = Vec::new();

    for item in items {
        let pid = item.limits.project_id.as_str();
        let mut expired = false;
        if let Some(k) = &item.idempotency {
            if let Some((fp, first)) = seen.get(&(pid, k.key.as_str())) {
                outcomes.push(if *fp == k.fingerprint {
                    Ok(as_replay(first))
                } else {
                    Err(Error::IdempotencyConflict)
                });
                continue;
            }
            let existing: Option<IdempotencyRow> = db_run!(conn, |c| idempotency_keys::table
                .find((pid, k.key.as_str()))
                .select(IdempotencyRow::as_select())
                .first(c)
                .optional())?;
            if let Some(row) = existing {
                if row.expires_at > now {
                    if row.fingerprint != k.fingerprint {
                        outcomes.push(Err(Error::IdempotencyConflict));
                        continue;
                    }
                    let found: Option<(String, MessageStatus)> =
                        db_run!(conn, |c| messages::table
                            .filter(messages::id.eq(&row.message_id))
                            .select((messages::device_code, messages::status))
                            .first(c)
                            .optional())?;
                    outcomes.push(match found {
                        Some((device_code, status)) => Ok(Accepted::Replayed {
                            id: row.message_id,
                            device_code,
                            status,
                        }),
                        None => Err(Error::Internal(
                            "idempotency key points at no message".into(),
                        )),
                    });
                    continue;
                }
                expired = true;
            }
        }

        let ctr = counters
            .get_mut(pid)
            .expect("counter loaded for every project");
        if item.limits.suspended || ctr.month >= item.limits.monthly {
            outcomes.push(Err(Error::QuotaExceeded));
            continue;
        }
        if ctr.minute >= item.limits.per_minute {
            let retry_after_ms = MINUTE_MS - now.rem_euclid(MINUTE_MS);
            outcomes.push(Err(Error::RateLimited {
                limit: item.limits.per_minute,
                retry_after: Duration::from_millis(retry_after_ms as u64),
            }));
            continue;
        }

        let key_row = item.idempotency.as_ref().map(|k| IdempotencyRow {
            project_id: item.limits.project_id.clone(),
            key: k.key.clone(),
            fingerprint: k.fingerprint.clone(),
            message_id: item.message.id.clone(),
            expires_at: now + k.ttl_ms,
        });
        if isolated {
            let written = in_savepoint(conn, |conn| {
                if let (true, Some(k)) = (expired, &item.idempotency) {
                    db_run!(conn, |c| diesel::delete(
                        idempotency_keys::table.find((pid, k.key.as_str()))
                    )
                    .execute(c))?;
                }
                if let Some(m) = &item.media {
                    db_run!(conn, |c| diesel::insert_into(media::table)
                        .values(m)
                        .execute(c))?;
                }
                db_run!(conn, |c| diesel::insert_into(messages::table)
                    .values(&item.message)
                    .execute(c))?;
                if let Some(k) = &key_row {
                    db_run!(conn, |c| diesel::insert_into(idempotency_keys::table)
                        .values(k)
                        .execute(c))?;
                }
                Ok(())
            })?;
            if let Err(e) = written {
                let failure = Failure::of(&e);
                tracing::warn!(error = %e, project = pid, "the database refused a message");
                outcomes.push(Err(failure.error()));
                continue;
            }
        } else {
            if let Some(m) = &item.media {
                db_run!(conn, |c| diesel::insert_into(media::table)
                    .values(m)
                    .execute(c))?;
            }
            if let (true, Some(k)) = (expired, &item.idempotency) {
                expired_keys.push((pid, k.key.as_str()));
            }
            new_messages.push(&item.message);
            new_keys.extend(key_row);
        }
        ctr.minute += 1;
        ctr.month += 1;
        ctr.dirty = true;
        let created = Accepted::Created {
            id: item.message.id.clone(),
            device_code: item.message.device_code.clone(),
        };
        if let Some(k) = &item.idempotency {
            seen.insert(
                (pid, k.key.as_str()),
                (k.fingerprint.as_str(), created.clone()),
            );
        }
        outcomes.push(Ok(created));
    }

    for chunk in new_messages.chunks(INSERT_CHUNK) {
        let rows: Vec<&NewMessage> = chunk.to_vec();
        db_run!(conn, |c| diesel::insert_into(messages::table)
            .values(rows)
            .execute(c))?;
    }
    for (pid, key) in expired_keys {
        db_run!(conn, |c| diesel::delete(
            idempotency_keys::table.find((pid, key))
        )
        .execute(c))?;
    }
    for chunk in new_keys.chunks(INSERT_CHUNK) {
        db_run!(conn, |c| diesel::insert_into(idempotency_keys::table)
            .values(chunk)
            .execute(c))?;
    }
    for (pid, ctr) in counters.iter().filter(|(_, c)| c.dirty) {
        for (bucket, value) in [(&minute_bucket, ctr.minute), (&month_bucket, ctr.month)] {
            db_run!(conn, |c| diesel::update(
                usage_counters::table.find((pid.as_str(), bucket.as_str()))
            )
            .set(usage_counters::count.eq(value))
            .execute(c))?;
        }
    }
    Ok(outcomes)
}

fn as_replay(first: &Accepted) -> Accepted {
    match first {
        Accepted::Created { id, device_code }
        | Accepted::Replayed {
            id, device_code, ..
        } => Accepted::Replayed {
            id: id.clone(),
            device_code: device_code.clone(),
            status: MessageStatus::Queued,
        },
    }
}

/// What a project has sent in the current rate-limit and quota windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub this_minute: i64,
    pub this_month: i64,
}

/// Current usage of a project.
pub fn usage(conn: &mut DbConn, project_id: &ProjectId, now: i64) -> Result<Usage> {
    let minute_bucket = format!("m{}", now / MINUTE_MS);
    let month_bucket = month_bucket(now);
    let rows: Vec<(String, i64)> = db_run!(conn, |c| usage_counters::table
        .filter(usage_counters::project_id.eq(project_id))
        .filter(usage_counters::bucket.eq_any([&minute_bucket, &month_bucket]))
        .select((usage_counters::bucket, usage_counters::count))
        .load(c))?;
    let get = |b: &str| {
        rows.iter()
            .find(|(k, _)| k == b)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    Ok(Usage {
        this_minute: get(&minute_bucket),
        this_month: get(&month_bucket),
    })
}

struct Job {
    item: AcceptItem,
    reply: oneshot::Sender<Result<Accepted>>,
}

/// What the writers did since start (also exported as metrics).
#[derive(Debug, Default)]
struct Stats {
    retries: AtomicU64,
    isolated: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Batches (or isolated chunks) tried again whole after a transient failure.
    pub batch_retries: u64,
    /// Batches run again with a savepoint per item after a failure that was not transient.
    pub isolated_batches: u64,
}

/// The group-commit front of [`accept_batch`]: bounded, with a fixed set of writer threads.
#[derive(Clone)]
pub struct AcceptWriter {
    tx: mpsc::Sender<Job>,
    enqueue_timeout: Duration,
    stats: Arc<Stats>,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub writers: usize,
    pub capacity: usize,
    pub max_batch: usize,
    pub enqueue_timeout: Duration,
}

impl WriterConfig {
    pub fn for_backend(backend: Backend) -> Self {
        WriterConfig {
            // SQLite has one writer at a time anyway; PostgreSQL overlaps commits.
            writers: match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => 4,
            },
            capacity: 20_000,
            max_batch: 512,
            enqueue_timeout: Duration::from_secs(5),
        }
    }
}

/// Bytes of media one batch may carry, so a burst of uploads cannot balloon a transaction.
const MAX_BATCH_MEDIA_BYTES: usize = 64 << 20;

impl AcceptWriter {
    pub fn start(db: &Db, cfg: &WriterConfig) -> Result<AcceptWriter> {
        let (tx, rx) = mpsc::channel::<Job>(cfg.capacity);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(Stats::default());
        let writers = cfg.writers.max(1);
        let mut first = db.connect()?;
        let mode = Mode::of(&mut first)?;
        let group = db.group_flush()?;
        // A few committed batches may wait for the flusher; past that a writer waits too.
        let (settle, settled) = std::sync::mpsc::sync_channel::<Settle>(writers * 4);
        let mut first = Some(first);
        for n in 0..writers {
            let mut conn = match first.take() {
                Some(c) => c,
                None => db.connect()?,
            };
            mode.prepare(&mut conn)?;
            let w = Writer {
                db: db.clone(),
                conn,
                mode: mode.clone(),
                stats: stats.clone(),
            };
            let (rx, settle) = (rx.clone(), settle.clone());
            let max_batch = cfg.max_batch.max(1);
            std::thread::Builder::new()
                .name(format!("wagate-accept-{n}"))
                .spawn(move || writer_loop(w, rx, settle, max_batch))
                .map_err(Error::internal)?;
        }
        std::thread::Builder::new()
            .name("wagate-accept-flush".into())
            .spawn(move || flush_loop(&group, settled))
            .map_err(Error::internal)?;
        Ok(AcceptWriter {
            tx,
            enqueue_timeout: cfg.enqueue_timeout,
            stats,
        })
    }

    /// Number of requests waiting for a writer.
    pub fn backlog(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            batch_retries: self.stats.retries.load(Ordering::Relaxed),
            isolated_batches: self.stats.isolated.load(Ordering::Relaxed),
        }
    }

    pub async fn submit(&self, item: AcceptItem) -> Result<Accepted> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_timeout(Job { item, reply }, self.enqueue_timeout)
            .await
            .map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => Error::Overloaded,
                mpsc::error::SendTimeoutError::Closed(_) => {
                    Error::Unavailable("shutting down".into())
                }
            })?;
        rx.await
            .map_err(|_| Error::Unavailable("message writer stopped".into()))?
    }
}

/// One writer thread's state.
struct Writer {
    db: Db,
    conn: DbConn,
    /// How its connections commit (the flusher waits for the disk).
    mode: Mode,
    stats: Arc<Stats>,
}

/// A committed batch's answers, held until the flusher has its commit on disk.
type Settle = Vec<(oneshot::Sender<Result<Accepted>>, Result<Accepted>)>;

fn writer_loop(
    mut w: Writer,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    settle: std::sync::mpsc::SyncSender<Settle>,
    max_batch: usize,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Some(first) = rx.blocking_recv() else {
                return;
            };
            let mut bytes = first.item.media.as_ref().map_or(0, |m| m.data.len());
            let mut batch = vec![first];
            while batch.len() < max_batch && bytes < MAX_BATCH_MEDIA_BYTES {
                match rx.try_recv() {
                    Ok(job) => {
                        bytes += job.item.media.as_ref().map_or(0, |m| m.data.len());
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        metrics::histogram!("wagate_accept_batch_size").record(batch.len() as f64);
        // Taken apart, not cloned: an item may carry a whole media upload.
        let (items, replies): (Vec<AcceptItem>, Vec<_>) =
            batch.into_iter().map(|j| (j.item, j.reply)).unzip();
        let outcomes = w.commit(&items);
        let answers = replies.into_iter().zip(outcomes).collect();
        if settle.send(answers).is_err() {
            return; // the flusher is gone: shutting down
        }
    }
}

/// Answers committed batches once they are durable: one flush for all that are waiting.
/// When the flush fails, nothing is known of what was accepted: each such answer becomes
/// a 503 (the client retries with its idempotency key, a replay if the row was durable).
fn flush_loop(group: &GroupFlush, settled: std::sync::mpsc::Receiver<Settle>) {
    while let Ok(first) = settled.recv() {
        let mut waiting = vec![first];
        waiting.extend(settled.try_iter());
        let flushed = group.flush();
        metrics::histogram!("wagate_accept_flush_batches").record(waiting.len() as f64);
        if let Err(e) = &flushed {
            tracing::warn!(error = %e, "accepted batches could not be made durable");
        }
        for (reply, outcome) in waiting.into_iter().flatten() {
            let outcome = match &flushed {
                Ok(()) => outcome,
                Err(_) => outcome.and(Err(Error::Unavailable(
                    "the database did not confirm the write".into(),
                ))),
            };
            let _ = reply.send(outcome);
        }
    }
}

impl Writer {
    /// Commits a batch: whole, and when that fails, a savepoint per item (in chunks), so one
    /// bad item costs its neighbours one extra round, never a string of whole-batch retries.
    fn commit(&mut self, items: &[AcceptItem]) -> Vec<Result<Accepted>> {
        let failure = match self.attempt(items, false) {
            Ok(outcomes) => return outcomes,
            Err(f) => f,
        };
        if items.len() == 1 {
            return vec![Err(failure.error())];
        }
        self.stats.isolated.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("wagate_accept_batch_isolations_total").increment(1);
        items
            .chunks(ISOLATED_CHUNK)
            .flat_map(|chunk| match self.attempt(chunk, true) {
                Ok(outcomes) => outcomes,
                Err(f) => chunk.iter().map(|_| Err(f.error())).collect(),
            })
            .collect()
    }

    /// Runs a batch, trying again (on a fresh connection) only what failed transiently.
    fn attempt(
        &mut self,
        items: &[AcceptItem],
        isolated: bool,
    ) -> std::result::Result<Vec<Result<Accepted>>, Failure> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            let broken = db_run!(&mut self.conn, |c| diesel::r2d2::R2D2Connection::is_broken(
                c
            ));
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("wagate_accept_batch_retries_total").increment(1);
            }
            if broken || attempt > 0 {
                match self
                    .db
                    .connect()
                    .and_then(|mut c| self.mode.prepare(&mut c).map(|()| c))
                {
                    Ok(fresh) => self.conn = fresh,
                    Err(e) => {
                        last = Some(Failure {
                            transient: true,
                            validation: false,
                            detail: e.to_string(),
                        });
                        std::thread::sleep(Duration::from_millis(100 << attempt));
                        continue;
                    }
                }
            }
            match run(&mut self.conn, items, now_ms(), isolated) {
                Ok(outcomes) => return Ok(outcomes),
                Err(f) => {
                    tracing::warn!(error = %f.detail, batch = items.len(), attempt, isolated, transient = f.transient, "accept batch failed");
                    if !f.transient {
                        return Err(f);
                    }
                    last = Some(f);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;

    /// How real database refusals are judged: a check is the client's (400), a trigger's
    /// refusal is ours for good (500), neither is worth a retry.
    #[test]
    fn refusals_are_judged_by_kind() {
        let mut c = diesel::SqliteConnection::establish(":memory:").unwrap();
        c.batch_execute(
            "CREATE TABLE t (x INTEGER CHECK (x > 0)); \
             CREATE TRIGGER refuse BEFORE INSERT ON t WHEN NEW.x = 7 \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .unwrap();
        let check = c.batch_execute("INSERT INTO t VALUES (-1)").unwrap_err();
        let f = Failure::of(&check);
        assert!(!f.transient && f.validation, "{check}");
        assert_eq!(f.error().code(), "VALIDATION_ERROR");
        let trigger = c.batch_execute("INSERT INTO t VALUES (7)").unwrap_err();
        let f = Failure::of(&trigger);
        assert!(!f.transient && !f.validation, "{trigger}");
        assert_eq!(f.error().code(), "INTERNAL_ERROR");
        assert!(is_transient(&DbError::BrokenTransactionManager));
    }
}
