//! The cluster's shared state: the node registry and one lease per session that should run.
//!
//! A lease names the node that runs a session until `expires_at`, on the database's clock
//! (never a node's own), and an `epoch` that grows with every new owner. The epoch is a
//! fencing token: every write a session makes to shared state passes [`check_fence`] in its
//! own transaction, so a node that lost the lease (paused, cut off, too slow to renew) cannot
//! write once another node has claimed it. On PostgreSQL the check takes a share lock on the
//! lease row, so a claim (which updates that row) waits for a fenced write in flight and a
//! fenced write started after a claim sees the new epoch.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use super::schema::{nodes, session_leases};
use super::{Backend, DbConn};
use crate::db_run;
use crate::error::{Error, Result};

/// Who may write for a session: the owner and epoch of the lease it runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub device_id: String,
    pub node: String,
    pub epoch: i64,
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Held {
    #[diesel(sql_type = Text)]
    pub device_id: String,
    #[diesel(sql_type = BigInt)]
    pub epoch: i64,
    /// The node that held it before (a takeover when it is another node).
    #[diesel(sql_type = Nullable<Text>)]
    pub previous: Option<String>,
}

/// A session's lease as any node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub owner: Option<String>,
    pub epoch: i64,
    /// The owner's lease has not expired.
    pub live: bool,
    /// Where the owner answers internal calls.
    pub owner_url: Option<String>,
}

/// What this process registers as its node.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub id: String,
    pub instance: String,
    pub advertise_url: String,
    pub version: String,
    pub max_sessions: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = nodes)]
pub struct NodeRow {
    pub id: String,
    pub instance: String,
    pub advertise_url: String,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub max_sessions: Option<i64>,
    pub draining: bool,
    pub stopped_at: Option<i64>,
}

/// A node with what it owns, read at `now` (database clock).
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub node: NodeRow,
    /// Live leases it holds.
    pub owned: i64,
    pub now: i64,
}

/// What a heartbeat found.
#[derive(Debug, Clone)]
pub struct Beat {
    pub now: i64,
    pub draining: bool,
    /// Every lease this node holds, renewed.
    pub held: Vec<Held>,
}

/// The database's clock in milliseconds: every lease comparison uses it, so nodes with
/// skewed clocks still agree on who owns what.
pub fn db_now(conn: &mut DbConn) -> Result<i64> {
    #[derive(QueryableByName)]
    struct Now {
        #[diesel(sql_type = BigInt)]
        now: i64,
    }
    match conn {
        DbConn::Postgres(c) => Ok(diesel::sql_query(
            "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS now",
        )
        .get_result::<Now>(c)?
        .now),
        // One node per SQLite file: its clock is the only one.
        DbConn::Sqlite(_) => Ok(super::now_ms()),
    }
}

/// How a registration went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// Another process holds the id: its heartbeat is this young (milliseconds).
    InUse {
        heartbeat_age_ms: i64,
    },
}

/// Registers this process as node `rec.id`. Refused while another process may still hold
/// the id (a heartbeat younger than `ttl_ms` from a different instance): two processes under
/// one name would renew each other's leases. On SQLite the file lock already guarantees one
/// process, so the check is skipped there.
pub fn register(conn: &mut DbConn, rec: &NodeRecord, ttl_ms: i64) -> Result<Registration> {
    conn.transaction(|conn| {
        let now = db_now(conn)?;
        let existing: Option<NodeRow> = db_run!(conn, |c| nodes::table
            .find(&rec.id)
            .select(NodeRow::as_select())
            .first(c)
            .optional())?;
        if let Some(n) = existing
            && matches!(conn, DbConn::Postgres(_))
            && n.instance != rec.instance
            && n.stopped_at.is_none()
            && n.heartbeat_at > now - ttl_ms
        {
            return Ok(Registration::InUse {
                heartbeat_age_ms: now - n.heartbeat_at,
            });
        }
        let row = (
            nodes::id.eq(&rec.id),
            nodes::instance.eq(&rec.instance),
            nodes::advertise_url.eq(&rec.advertise_url),
            nodes::version.eq(&rec.version),
            nodes::started_at.eq(now),
            nodes::heartbeat_at.eq(now),
            nodes::max_sessions.eq(rec.max_sessions),
            nodes::draining.eq(false),
            nodes::stopped_at.eq(None::<i64>),
        );
        db_run!(conn, |c| diesel::insert_into(nodes::table)
            .values(row)
            .on_conflict(nodes::id)
            .do_update()
            .set(row)
            .execute(c))?;
        Ok(Registration::Registered)
    })
}

/// Renews the node's heartbeat and every lease it holds, for `ttl_ms` from now. Fails with
/// `SessionMoved` when the node row no longer names this instance (another process took
/// the id over): the caller must stop every session at once.
pub fn heartbeat(conn: &mut DbConn, node: &str, instance: &str, ttl_ms: i64) -> Result<Beat> {
    conn.transaction(|conn| {
        let now = db_now(conn)?;
        let draining: Option<bool> = db_run!(conn, |c| diesel::update(
            nodes::table
                .filter(nodes::id.eq(node))
                .filter(nodes::instance.eq(instance)),
        )
        .set(nodes::heartbeat_at.eq(now))
        .returning(nodes::draining)
        .get_result(c)
        .optional())?;
        let Some(draining) = draining else {
            return Err(Error::SessionMoved);
        };
        let held: Vec<(String, i64)> = db_run!(conn, |c| diesel::update(
            session_leases::table.filter(session_leases::owner.eq(node)),
        )
        .set(session_leases::expires_at.eq(now + ttl_ms))
        .returning((session_leases::device_id, session_leases::epoch))
        .get_results(c))?;
        Ok(Beat {
            now,
            draining,
            held: held
                .into_iter()
                .map(|(device_id, epoch)| Held {
                    device_id,
                    epoch,
                    previous: Some(node.to_owned()),
                })
                .collect(),
        })
    })
}

/// Claims up to `limit` leases nobody holds (released, or expired on the database clock),
/// oldest expiry first, for `ttl_ms`. Each claim increments the epoch. PostgreSQL skips rows
/// another node is claiming at the same moment.
pub fn claim(conn: &mut DbConn, node: &str, limit: i64, ttl_ms: i64) -> Result<Vec<Held>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    conn.transaction(|conn| {
        let now = db_now(conn)?;
        let held = match conn {
            DbConn::Postgres(c) => diesel::sql_query(
                "WITH free AS (SELECT device_id, owner FROM session_leases \
                 WHERE owner IS NULL OR expires_at < $1 ORDER BY expires_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
                 UPDATE session_leases l SET owner = $3, epoch = l.epoch + 1, \
                 expires_at = $1 + $4, acquired_at = $1 FROM free \
                 WHERE l.device_id = free.device_id \
                 RETURNING l.device_id, l.epoch, free.owner AS previous",
            )
            .bind::<BigInt, _>(now)
            .bind::<BigInt, _>(limit)
            .bind::<Text, _>(node)
            .bind::<BigInt, _>(ttl_ms)
            .load::<Held>(c)?,
            DbConn::Sqlite(_) => {
                // One writer (the transaction is BEGIN IMMEDIATE): read, then update.
                let free: Vec<(String, Option<String>)> = db_run!(conn, |c| session_leases::table
                    .filter(
                        session_leases::owner
                            .is_null()
                            .or(session_leases::expires_at.lt(now)),
                    )
                    .order(session_leases::expires_at.asc())
                    .limit(limit)
                    .select((session_leases::device_id, session_leases::owner))
                    .load(c))?;
                let mut held = Vec::with_capacity(free.len());
                for (device_id, previous) in free {
                    let epoch = take(conn, &device_id, node, now, ttl_ms)?;
                    held.push(Held {
                        device_id,
                        epoch,
                        previous,
                    });
                }
                held
            }
        };
        Ok(held)
    })
}

/// Claims one session's lease for `node` if nobody holds it; answers the lease when `node`
/// holds it already. `None` when another node holds it.
pub fn claim_one(
    conn: &mut DbConn,
    device_id: &str,
    node: &str,
    ttl_ms: i64,
) -> Result<Option<Held>> {
    conn.transaction(|conn| {
        let now = db_now(conn)?;
        want(conn, device_id)?;
        let current: Option<(Option<String>, i64, i64)> = {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = Nullable<Text>)]
                owner: Option<String>,
                #[diesel(sql_type = BigInt)]
                epoch: i64,
                #[diesel(sql_type = BigInt)]
                expires_at: i64,
            }
            let sql = conn.portable_sql(match conn.backend() {
                Backend::Postgres => {
                    "SELECT owner, epoch, expires_at FROM session_leases WHERE device_id = $1 FOR UPDATE"
                }
                Backend::Sqlite => {
                    "SELECT owner, epoch, expires_at FROM session_leases WHERE device_id = $1"
                }
            });
            let row: Option<Row> = db_run!(conn, |c| diesel::sql_query(sql.as_ref())
                .bind::<Text, _>(device_id)
                .get_result(c)
                .optional())?;
            row.map(|r| (r.owner, r.epoch, r.expires_at))
        };
        let Some((owner, epoch, expires_at)) = current else {
            return Ok(None);
        };
        match owner {
            Some(o) if o == node => Ok(Some(Held {
                device_id: device_id.to_owned(),
                epoch,
                previous: Some(o),
            })),
            Some(_) if expires_at >= now => Ok(None),
            previous => {
                let epoch = take(conn, device_id, node, now, ttl_ms)?;
                Ok(Some(Held {
                    device_id: device_id.to_owned(),
                    epoch,
                    previous,
                }))
            }
        }
    })
}

/// Makes `node` the owner of a lease it was allowed to claim, with a new epoch; answers it.
fn take(conn: &mut DbConn, device_id: &str, node: &str, now: i64, ttl_ms: i64) -> Result<i64> {
    Ok(db_run!(conn, |c| diesel::update(
        session_leases::table.find(device_id)
    )
    .set((
        session_leases::owner.eq(node),
        session_leases::epoch.eq(session_leases::epoch + 1),
        session_leases::expires_at.eq(now + ttl_ms),
        session_leases::acquired_at.eq(now),
    ))
    .returning(session_leases::epoch)
    .get_result(c))?)
}

/// The session should run somewhere: its lease row exists (unowned if new).
pub fn want(conn: &mut DbConn, device_id: &str) -> Result<()> {
    db_run!(conn, |c| diesel::insert_into(session_leases::table)
        .values((
            session_leases::device_id.eq(device_id),
            session_leases::epoch.eq(0),
            session_leases::expires_at.eq(0),
        ))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// The session should not run anywhere (stopped, logged out, deleted).
pub fn unwant(conn: &mut DbConn, device_id: &str) -> Result<()> {
    db_run!(conn, |c| diesel::delete(
        session_leases::table.find(device_id)
    )
    .execute(c))?;
    Ok(())
}

/// Gives a lease back so another node claims it at once. Only the holder of that epoch can.
pub fn release(conn: &mut DbConn, fence: &Fence) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(
        session_leases::table
            .filter(session_leases::device_id.eq(&fence.device_id))
            .filter(session_leases::owner.eq(&fence.node))
            .filter(session_leases::epoch.eq(fence.epoch)),
    )
    .set((
        session_leases::owner.eq(None::<String>),
        session_leases::expires_at.eq(0),
    ))
    .execute(c))?;
    Ok(n == 1)
}

/// Gives every lease of `node` back (graceful stop) and marks the node stopped.
pub fn leave(conn: &mut DbConn, node: &str, instance: &str) -> Result<usize> {
    conn.transaction(|conn| {
        let now = db_now(conn)?;
        let mine = db_run!(conn, |c| diesel::update(
            nodes::table
                .filter(nodes::id.eq(node))
                .filter(nodes::instance.eq(instance)),
        )
        .set(nodes::stopped_at.eq(now))
        .execute(c))?;
        if mine == 0 {
            return Ok(0);
        }
        release_all(conn, node)
    })
}

/// Who runs the session, if it should run at all (`None`: no lease row).
pub fn lease_of(conn: &mut DbConn, device_id: &str) -> Result<Option<LeaseView>> {
    let now = db_now(conn)?;
    let row: Option<(Option<String>, i64, i64, Option<String>)> =
        db_run!(conn, |c| session_leases::table
            .left_join(nodes::table.on(nodes::id.nullable().eq(session_leases::owner)))
            .filter(session_leases::device_id.eq(device_id))
            .select((
                session_leases::owner,
                session_leases::epoch,
                session_leases::expires_at,
                nodes::advertise_url.nullable(),
            ))
            .first(c)
            .optional())?;
    Ok(row.map(|(owner, epoch, expires_at, owner_url)| LeaseView {
        live: owner.is_some() && expires_at >= now,
        owner,
        epoch,
        owner_url,
    }))
}

/// Refuses (`SessionMoved`) unless `fence` still holds the session's lease. Call it inside
/// the transaction of the write it guards.
pub fn check_fence(conn: &mut DbConn, fence: &Fence) -> Result<()> {
    let sql = conn.portable_sql(match conn.backend() {
        Backend::Postgres => {
            "SELECT epoch FROM session_leases WHERE device_id = $1 AND owner = $2 FOR SHARE"
        }
        Backend::Sqlite => "SELECT epoch FROM session_leases WHERE device_id = $1 AND owner = $2",
    });
    #[derive(QueryableByName)]
    struct Epoch {
        #[diesel(sql_type = BigInt)]
        epoch: i64,
    }
    let found: Option<Epoch> = db_run!(conn, |c| diesel::sql_query(sql.as_ref())
        .bind::<Text, _>(&fence.device_id)
        .bind::<Text, _>(&fence.node)
        .get_result(c)
        .optional())?;
    match found {
        Some(e) if e.epoch == fence.epoch => Ok(()),
        _ => {
            ::metrics::counter!("wagate_fenced_writes_total").increment(1);
            Err(Error::SessionMoved)
        }
    }
}

/// Every registered node with the live leases it holds, newest heartbeat first.
pub fn nodes(conn: &mut DbConn) -> Result<Vec<NodeStatus>> {
    let now = db_now(conn)?;
    let rows: Vec<NodeRow> = db_run!(conn, |c| nodes::table
        .order(nodes::id.asc())
        .select(NodeRow::as_select())
        .load(c))?;
    let counts: Vec<(Option<String>, i64)> = db_run!(conn, |c| session_leases::table
        .filter(session_leases::owner.is_not_null())
        .filter(session_leases::expires_at.ge(now))
        .group_by(session_leases::owner)
        .select((session_leases::owner, diesel::dsl::count_star()))
        .load(c))?;
    Ok(rows
        .into_iter()
        .map(|node| {
            let owned = counts
                .iter()
                .find(|(o, _)| o.as_deref() == Some(node.id.as_str()))
                .map_or(0, |(_, n)| *n);
            NodeStatus { node, owned, now }
        })
        .collect())
}

/// How many sessions should run (lease rows).
pub fn wanted_count(conn: &mut DbConn) -> Result<i64> {
    Ok(db_run!(conn, |c| session_leases::table
        .count()
        .get_result(c))?)
}

/// Marks a node draining (it hands its sessions over and claims none) or not. False when no
/// such node is registered.
pub fn set_draining(conn: &mut DbConn, node: &str, draining: bool) -> Result<bool> {
    let n = db_run!(conn, |c| diesel::update(nodes::table.find(node))
        .set(nodes::draining.eq(draining))
        .execute(c))?;
    Ok(n == 1)
}

/// Where the live owners of these sessions answer: `(device_id, advertise_url)`.
pub fn owner_urls(conn: &mut DbConn, device_ids: &[String]) -> Result<Vec<(String, String)>> {
    let now = db_now(conn)?;
    Ok(db_run!(conn, |c| session_leases::table
        .inner_join(nodes::table.on(nodes::id.nullable().eq(session_leases::owner)))
        .filter(session_leases::device_id.eq_any(device_ids))
        .filter(session_leases::expires_at.ge(now))
        .select((session_leases::device_id, nodes::advertise_url))
        .load(c))?)
}

/// Releases every lease recorded under `node` (at its graceful stop, or at start: they belong
/// to an earlier process of it); answers how many.
pub fn release_all(conn: &mut DbConn, node: &str) -> Result<usize> {
    Ok(db_run!(conn, |c| diesel::update(
        session_leases::table.filter(session_leases::owner.eq(node))
    )
    .set((
        session_leases::owner.eq(None::<String>),
        session_leases::expires_at.eq(0),
    ))
    .execute(c))?)
}
