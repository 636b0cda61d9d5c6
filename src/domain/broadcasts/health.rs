//! Account health: which sessions campaigns may send through. A session is *unhealthy*
//! when it is banned, logged out or failed for good, down (not connected) for longer than
//! [`HealthSettings::down_after`], or when its last [`HealthSettings::failure_run`] campaign
//! messages all failed. The dispatcher sends no campaign message through an unhealthy
//! session: a recipient of one is moved, when it is claimed, to a healthy session of its
//! campaign (re-slotted: `healthy[seq mod count]`), and campaign messages still waiting in
//! the unhealthy session's queue (never written to WhatsApp) are taken back and dispatched
//! again the same way. A campaign with no healthy session left is paused *by health* (not a
//! user's pause) and resumed by itself when one recovers (connected again).
//!
//! The judgement runs on every node's dispatcher about once a second ([`Gateway::sweep_health`]);
//! the verdicts live in the database (`session_health`, `broadcast_pauses`), each change
//! conditioned on the stored one, so nodes agree, a restart keeps them, and each change is
//! recorded once, with its `session.health` or `broadcast.status` event in the same
//! transaction. Counter `wagate_session_health_changes_total{to}`, gauge
//! `wagate_sessions_unhealthy`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::campaigns::{StatusCounts, counts_of};
use crate::domain::Gateway;
use crate::error::Result;
use crate::events::{self as ev, NewEvent};
use crate::storage::broadcasts::{self as store, BroadcastRow, PAUSED, RUNNING, SCHEDULED};
use crate::storage::health::{
    self as hstore, BY_HEALTH, BY_USER, DeviceState, HEALTHY, HealthRow, UNHEALTHY, Watched,
};
use crate::storage::{DbConn, events, now_ms};
use crate::values::SessionId;

/// When a session stops being fit for campaigns.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// A session not connected for this long is unhealthy (a short reconnect is not).
    pub down_after: Duration,
    /// This many campaign messages failing in a row make a session unhealthy.
    pub failure_run: i64,
    /// A session unhealthy for failures is tried again after this long, or as soon as it
    /// connects again.
    pub failure_cooldown: Duration,
    /// How often a node judges health.
    pub sweep_every: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            down_after: Duration::from_secs(10 * 60),
            failure_run: 5,
            failure_cooldown: Duration::from_secs(30 * 60),
            sweep_every: Duration::from_secs(1),
        }
    }
}

/// Campaigns one sweep looks after at most.
const MAX_WATCHED: i64 = 10_000;
/// Queued campaign messages taken back from one session per sweep at most.
const WITHDRAW_BATCH: i64 = 500;
/// How long a recipient of a campaign with no healthy session waits before it is claimed
/// again (the sweep pauses the campaign meanwhile).
const NO_SESSION_HOLD_MS: i64 = 1_000;

/// A session's verdict: `None` healthy, else unhealthy with why.
fn judge(
    d: &DeviceState,
    h: &HealthRow,
    run: i64,
    s: &HealthSettings,
    now: i64,
) -> (Option<String>, Option<i64>) {
    let name = if d.name.is_empty() {
        d.id.to_string()
    } else {
        d.name.clone()
    };
    let why = |what: &str| match d.state_reason.as_deref() {
        Some(r) if !r.is_empty() => format!("session {name} {what} ({r})"),
        _ => format!("session {name} {what}"),
    };
    let unhealthy = h.health == UNHEALTHY;
    match d.state.as_str() {
        "banned" => (Some(why("banned")), h.down_since.or(Some(now))),
        "logged_out" => (Some(why("logged out")), h.down_since.or(Some(now))),
        "failed" => (Some(why("failed")), h.down_since.or(Some(now))),
        "replaced" => (Some(why("replaced")), h.down_since.or(Some(now))),
        "deleted" => (Some(why("deleted")), h.down_since.or(Some(now))),
        "connected" => {
            let retried = d.last_connected_at.is_some_and(|at| at > h.since)
                || now - h.since >= s.failure_cooldown.as_millis() as i64;
            let failing = run >= s.failure_run;
            let verdict = match (unhealthy, failing) {
                (true, true) if !retried => h.reason.clone(),
                (false, true) => Some(format!(
                    "session {name}: its last {} campaign messages failed",
                    s.failure_run
                )),
                _ => None,
            };
            (verdict, None)
        }
        _ => {
            let down_since = h.down_since.unwrap_or(now);
            let verdict = if now - down_since >= s.down_after.as_millis() as i64 {
                Some(format!(
                    "session {name} disconnected since {}",
                    ev::rfc3339(down_since)
                ))
            } else if unhealthy {
                // Not recovered until it connects again.
                h.reason.clone()
            } else {
                None
            };
            (verdict, Some(down_since))
        }
    }
}

/// The session ids of a campaign, by slot.
fn slots_of(w: &Watched) -> Vec<String> {
    serde_json::from_str(&w.session_ids).unwrap_or_default()
}

impl Gateway {
    /// One judgement of every session a campaign uses (and every unhealthy one): health
    /// changes with their events, campaigns paused or resumed by health, queued campaign
    /// messages taken back from unhealthy sessions.
    pub(super) async fn sweep_health(&self) -> Result<()> {
        let s = self.settings().broadcast_health.clone();
        let now = now_ms();
        let (watched, devices, rows) = self
            .db()
            .run(move |c| {
                let watched = hstore::watched(c, MAX_WATCHED)?;
                let mut ids: HashSet<String> = watched.iter().flat_map(slots_of).collect();
                ids.extend(
                    hstore::unhealthy(c, MAX_WATCHED)?
                        .into_iter()
                        .map(|r| r.device_id.into_string()),
                );
                ids.extend(
                    hstore::queued_campaign_devices(c, MAX_WATCHED)?
                        .into_iter()
                        .map(SessionId::into_string),
                );
                let ids: Vec<SessionId> = ids.into_iter().map(SessionId::from).collect();
                let devices = hstore::devices(c, &ids)?;
                let rows = hstore::rows(c, &ids)?;
                Ok((watched, devices, rows))
            })
            .await?;
        let mut rows: HashMap<String, HealthRow> = rows
            .into_iter()
            .map(|r| (r.device_id.to_string(), r))
            .collect();
        let mut unhealthy: HashMap<String, String> = HashMap::new();
        for d in devices {
            let stored = rows.remove(d.id.as_str());
            let fresh = stored.is_none();
            let row = stored.unwrap_or(HealthRow {
                device_id: d.id.clone(),
                project_id: d.project_id.clone(),
                health: HEALTHY.into(),
                reason: None,
                since: now,
                down_since: None,
                scan_from: 0,
                updated_at: now,
            });
            if let Some(why) = self.judge_one(&d, row, fresh, &s, now).await? {
                unhealthy.insert(d.id.to_string(), why);
            }
        }
        let total = self
            .db()
            .run(|c| Ok(hstore::unhealthy(c, MAX_WATCHED)?.len()))
            .await?;
        ::metrics::gauge!("wagate_sessions_unhealthy").set(total as f64);
        self.apply_to_campaigns(&watched, &unhealthy, now).await
    }

    /// Judges one session (`fresh`: never judged before) and stores the outcome; returns
    /// its verdict.
    async fn judge_one(
        &self,
        d: &DeviceState,
        mut row: HealthRow,
        fresh: bool,
        s: &HealthSettings,
        now: i64,
    ) -> Result<Option<String>> {
        // Failures matter (and a recovery forgives them) only while it is connected.
        let (run, newest_ok, newest) = if d.state == "connected" {
            let (id, from, n) = (d.id.clone(), row.scan_from, s.failure_run);
            self.db()
                .run(move |c| hstore::failure_run(c, &id, from, n))
                .await?
        } else {
            (0, None, None)
        };
        let (verdict, down_since) = judge(d, &row, run, s, now);
        // Nothing at or before the newest success can be part of a run of failures.
        let mut scan_from = newest_ok.map_or(row.scan_from, |ok| ok.max(row.scan_from));
        let to = if verdict.is_some() {
            UNHEALTHY
        } else {
            HEALTHY
        };
        if to == HEALTHY && row.health == UNHEALTHY {
            // Recovered: the failures before it are forgiven.
            scan_from = scan_from.max(newest.unwrap_or(0));
        }
        let from = row.health.clone();
        let noted = (row.down_since, row.scan_from) != (down_since, scan_from);
        row.down_since = down_since;
        row.scan_from = scan_from;
        if to != from || noted || fresh {
            let (stored, f, reason) = (row.clone(), from.clone(), verdict.clone());
            let moved = self
                .db()
                .run(move |c| {
                    hstore::observe(
                        c,
                        &stored.device_id,
                        &stored.project_id,
                        stored.down_since,
                        stored.scan_from,
                        now,
                    )?;
                    if f == to {
                        return Ok(false);
                    }
                    hstore::change(c, &stored, &f, to, reason.as_deref(), now)
                })
                .await?;
            if moved {
                ::metrics::counter!("wagate_session_health_changes_total", "to" => to).increment(1);
                tracing::info!(device = %d.id, health = to, reason = ?verdict, "session health changed");
            }
        }
        Ok(verdict)
    }

    /// Pauses campaigns left with no healthy session, resumes those paused by health that
    /// have one again, and takes back queued messages of unhealthy sessions of campaigns
    /// that can send elsewhere.
    async fn apply_to_campaigns(
        &self,
        watched: &[Watched],
        unhealthy: &HashMap<String, String>,
        now: i64,
    ) -> Result<()> {
        let window = self.settings().broadcasts.reply_window.as_millis() as i64;
        for w in watched {
            let slots = slots_of(w);
            let healthy: Vec<i32> = (0..slots.len() as i32)
                .filter(|i| !unhealthy.contains_key(&slots[*i as usize]))
                .collect();
            let reasons: Vec<&str> = slots
                .iter()
                .filter_map(|s| unhealthy.get(s).map(String::as_str))
                .collect();
            let id = w.id.clone();
            if w.state == RUNNING && healthy.is_empty() {
                let reason = format!("paused by health: {}", reasons.join("; "));
                self.db()
                    .run(move |c| {
                        c.transaction(|c| {
                            if hstore::move_campaign(c, &id, RUNNING, PAUSED, Some(&reason), now)? {
                                record_status(c, &id, Some(&reason), window, now)?;
                            }
                            Ok(())
                        })
                    })
                    .await?;
            } else if w.state == PAUSED && !healthy.is_empty() {
                let to = if w.send_at > now { SCHEDULED } else { RUNNING };
                let reason = "resumed: a session of the broadcast is healthy again".to_owned();
                let resumed = self
                    .db()
                    .run(move |c| {
                        c.transaction(|c| {
                            let moved = hstore::move_campaign(c, &id, PAUSED, to, None, now)?;
                            if moved {
                                record_status(c, &id, Some(&reason), window, now)?;
                            }
                            Ok(moved)
                        })
                    })
                    .await?;
                if resumed {
                    self.inner.broadcasts_wake.notify_one();
                }
            }
        }
        // Queued messages of unhealthy sessions, of campaigns that have a healthy one (a
        // completed campaign too: it runs again for them).
        let mut healthy_of: HashMap<String, Vec<i32>> = HashMap::new();
        let mut moved = 0usize;
        for device in unhealthy.keys() {
            let id = SessionId::from(device.as_str());
            let waiting = self
                .db()
                .run(move |c| hstore::withdrawable(c, &id, now, WITHDRAW_BATCH))
                .await?;
            for w in waiting {
                if !healthy_of.contains_key(&w.broadcast_id) {
                    let bid = w.broadcast_id.clone();
                    let row = self.db().run(move |c| store::get_any(c, &bid)).await?;
                    let slots: Vec<String> = row
                        .filter(|r| r.state == RUNNING || r.state == store::COMPLETED)
                        .map(|r| serde_json::from_str(&r.session_ids).unwrap_or_default())
                        .unwrap_or_default();
                    let healthy = (0..slots.len() as i32)
                        .filter(|i| !unhealthy.contains_key(&slots[*i as usize]))
                        .collect();
                    healthy_of.insert(w.broadcast_id.clone(), healthy);
                }
                let healthy = &healthy_of[&w.broadcast_id];
                if healthy.is_empty() {
                    continue;
                }
                let slot = healthy[(w.seq.unsigned_abs() % healthy.len() as u64) as usize];
                let taken = self
                    .db()
                    .run(move |c| {
                        c.transaction(|c| {
                            if !hstore::withdraw(c, &w, slot, now)? {
                                return Ok(false);
                            }
                            if hstore::reopen(c, &w.broadcast_id, now)? {
                                let reason = "running again: recipients taken back from an unhealthy session";
                                record_status(c, &w.broadcast_id, Some(reason), window, now)?;
                            }
                            Ok(true)
                        })
                    })
                    .await?;
                if taken {
                    moved += 1;
                }
            }
        }
        if moved > 0 {
            tracing::info!(
                moved,
                "campaign messages taken back from unhealthy sessions"
            );
            self.inner.broadcasts_wake.notify_one();
        }
        Ok(())
    }

    /// Sessions campaigns must not send through now.
    pub(super) async fn unhealthy_sessions(&self) -> Result<HashSet<String>> {
        Ok(self
            .db()
            .run(|c| hstore::unhealthy(c, MAX_WATCHED))
            .await?
            .into_iter()
            .map(|r| r.device_id.into_string())
            .collect())
    }

    /// A claimed recipient whose session is unhealthy goes to a healthy session of its
    /// campaign (`healthy[seq mod count]`, stored, so its log shows it); with none left it
    /// waits a moment, held, while the sweep pauses the campaign. `None`: not to dispatch now.
    pub(super) async fn route_around_unhealthy(
        &self,
        sessions: &[Option<(SessionId, String)>],
        mut r: store::Claimed,
        unhealthy: &HashSet<String>,
    ) -> Result<Option<store::Claimed>> {
        let is_healthy = |s: &Option<(SessionId, String)>| {
            s.as_ref()
                .is_some_and(|(id, _)| !unhealthy.contains(id.as_str()))
        };
        let own = sessions.get(r.session_slot as usize);
        match own {
            Some(Some((id, _))) if unhealthy.contains(id.as_str()) => {}
            _ => return Ok(Some(r)),
        }
        let healthy: Vec<i32> = (0..sessions.len())
            .filter(|i| is_healthy(&sessions[*i]))
            .map(|i| i as i32)
            .collect();
        let (node, now) = (self.node_id().to_owned(), now_ms());
        let (bid, seq) = (r.broadcast_id.clone(), r.seq);
        if healthy.is_empty() {
            let reason = "the broadcast's sessions are unhealthy".to_owned();
            self.db()
                .run(move |c| {
                    store::hold(c, &bid, seq, &node, &reason, now + NO_SESSION_HOLD_MS, now)
                })
                .await?;
            return Ok(None);
        }
        let slot = healthy[(seq.unsigned_abs() % healthy.len() as u64) as usize];
        let moved = self
            .db()
            .run(move |c| hstore::reslot(c, &bid, seq, &node, slot, now))
            .await?;
        if !moved {
            return Ok(None);
        }
        r.session_slot = slot;
        Ok(Some(r))
    }

    /// Why a campaign waits, if it does, and when it should finish (`None`: not known, or
    /// not moving). See the README's "Health" for the estimate.
    pub(super) async fn waiting_of(
        &self,
        row: &BroadcastRow,
        counts: &StatusCounts,
    ) -> Result<(Option<String>, Option<i64>)> {
        let (id, sessions) = (
            row.id.to_string(),
            serde_json::from_str::<Vec<String>>(&row.session_ids).unwrap_or_default(),
        );
        let ids: Vec<SessionId> = sessions
            .iter()
            .map(|s| SessionId::from(s.as_str()))
            .collect();
        let (pause, next, health) = self
            .db()
            .run(move |c| {
                let pause = hstore::pause_of(c, &id)?;
                let next = hstore::next_due(c, &id)?;
                let health = hstore::rows(c, &ids)?;
                Ok((pause, next, health))
            })
            .await?;
        let sick: Vec<String> = health
            .into_iter()
            .filter(|h| h.health == UNHEALTHY)
            .map(|h| {
                h.reason
                    .unwrap_or_else(|| format!("session {} unhealthy", h.device_id))
            })
            .collect();
        Ok(waiting(
            row,
            counts,
            pause,
            next,
            &sick,
            sessions.len(),
            now_ms(),
        ))
    }
}

/// The pure part of [`Gateway::waiting_of`].
fn waiting(
    row: &BroadcastRow,
    counts: &StatusCounts,
    pause: Option<(String, Option<String>)>,
    next: Option<(i64, Option<String>)>,
    sick: &[String],
    sessions: usize,
    now: i64,
) -> (Option<String>, Option<i64>) {
    let remaining = counts.created;
    let healthy = sessions.saturating_sub(sick.len()) as i64;
    let gap = (row.pacing_min_ms + row.pacing_max_ms) / 2;
    let eta = |start: i64| {
        (healthy > 0).then(|| start.max(now) + remaining.max(1).saturating_sub(1) * gap / healthy)
    };
    match row.state.as_str() {
        SCHEDULED => (Some("scheduled".into()), eta(row.send_at)),
        PAUSED => match pause {
            Some((by, reason)) if by == BY_HEALTH => (
                Some(reason.unwrap_or_else(|| "paused by health".into())),
                None,
            ),
            _ => (Some("paused by user".into()), None),
        },
        RUNNING if remaining > 0 => {
            let mut why = Vec::new();
            let start = match next {
                Some((at, held)) if at > now => {
                    why.push(held.unwrap_or_else(|| "pacing gap".into()));
                    at
                }
                _ => now,
            };
            why.extend(sick.iter().cloned());
            let reason = (!why.is_empty()).then(|| why.join("; "));
            (reason, eta(start))
        }
        _ => (None, None),
    }
}

/// Records `broadcast.status` for a campaign's current state; call in the transaction of
/// the change.
pub(super) fn record_status(
    c: &mut DbConn,
    id: &str,
    reason: Option<&str>,
    reply_window_ms: i64,
    now: i64,
) -> Result<()> {
    let Some(row) = store::get_any(c, id)? else {
        return Ok(());
    };
    let counts = StatusCounts {
        replied: store::replied(c, &row.id, reply_window_ms)?,
        ..counts_of(store::counts(c, &row.id)?)
    };
    let counts = serde_json::json!({
        "created": counts.created,
        "pending": counts.pending,
        "sent": counts.sent,
        "delivered": counts.delivered,
        "read": counts.read,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "replied": counts.replied,
    });
    let fields = ev::broadcast_status(&ev::BroadcastChange {
        broadcast_id: &row.id,
        name: &row.name,
        state: &row.state,
        reason,
        counts,
    });
    events::record(
        c,
        NewEvent {
            project_id: row.project_id.clone(),
            device_id: None,
            kind: ev::BROADCAST_STATUS,
            fields,
        },
        now,
    )?;
    Ok(())
}

/// A user's pause, resume or cancel moved the campaign to `row.state`: who paused it is
/// noted (a user's pause is never lifted by health) and `broadcast.status` recorded; call
/// in the transaction of the change.
pub(super) fn user_changed(
    c: &mut DbConn,
    row: &BroadcastRow,
    reply_window_ms: i64,
    now: i64,
) -> Result<()> {
    let reason = if row.state == PAUSED {
        hstore::set_pause(c, &row.id, BY_USER, Some("paused by user"), now)?;
        "paused by user"
    } else {
        hstore::clear_pause(c, &row.id)?;
        if row.state == store::CANCELLED {
            "cancelled by user"
        } else {
            "resumed by user"
        }
    };
    record_status(c, &row.id, Some(reason), reply_window_ms, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::ProjectId;

    fn device(state: &str, last_connected_at: Option<i64>) -> DeviceState {
        DeviceState {
            id: SessionId::from("s1"),
            project_id: ProjectId::from("p1"),
            name: "A".into(),
            state: state.into(),
            state_reason: None,
            last_connected_at,
        }
    }

    fn row(health: &str, since: i64, down_since: Option<i64>) -> HealthRow {
        HealthRow {
            device_id: SessionId::from("s1"),
            project_id: ProjectId::from("p1"),
            health: health.into(),
            reason: Some("before".into()),
            since,
            down_since,
            scan_from: 0,
            updated_at: since,
        }
    }

    #[test]
    fn banned_logged_out_and_long_down_are_unhealthy() {
        let s = HealthSettings::default();
        let down = s.down_after.as_millis() as i64;
        let h = row(HEALTHY, 0, None);
        assert!(judge(&device("banned", None), &h, 0, &s, 10).0.is_some());
        assert!(
            judge(&device("logged_out", None), &h, 0, &s, 10)
                .0
                .is_some()
        );
        // A short disconnection is not; the same one lasting is.
        let (v, since) = judge(&device("disconnected", None), &h, 0, &s, 10);
        assert_eq!((v, since), (None, Some(10)));
        let h = row(HEALTHY, 0, Some(10));
        let (v, _) = judge(&device("connecting", None), &h, 0, &s, 10 + down);
        assert!(v.unwrap().contains("disconnected since"));
        assert_eq!(
            judge(&device("connected", Some(5)), &h, 0, &s, 20),
            (None, None)
        );
    }

    fn campaign(state: &str, send_at: i64) -> BroadcastRow {
        BroadcastRow {
            id: "b1".into(),
            project_id: ProjectId::from("p1"),
            name: "n".into(),
            template_id: "t".into(),
            language: "en".into(),
            kind: "contact_list".into(),
            contact_list_id: None,
            session_ids: "[]".into(),
            parameters: "{}".into(),
            state: state.into(),
            execute_type: "immediately".into(),
            send_at,
            pacing_min_ms: 4000,
            pacing_max_ms: 12000,
            daily_cap: 1000,
            recipients_total: 101,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn waiting_says_why_and_estimates_the_end() {
        let left = StatusCounts {
            created: 101,
            ..StatusCounts::default()
        };
        // 100 gaps of 8 s (the mean of 4–12 s) shared by two sessions, from the next due.
        let next = Some((5_000, Some("pacing: the session's gap".to_owned())));
        let (why, eta) = waiting(
            &campaign(RUNNING, 0),
            &left,
            None,
            next.clone(),
            &[],
            2,
            1_000,
        );
        assert_eq!(why.as_deref(), Some("pacing: the session's gap"));
        assert_eq!(eta, Some(5_000 + 100 * 8_000 / 2));
        // One of the two unhealthy: said, and the other does it alone.
        let sick = ["session A banned".to_owned()];
        let (why, eta) = waiting(&campaign(RUNNING, 0), &left, None, next, &sick, 2, 1_000);
        assert_eq!(why.unwrap(), "pacing: the session's gap; session A banned");
        assert_eq!(eta, Some(5_000 + 100 * 8_000));
        // None healthy: no estimate.
        let both = [sick[0].clone(), "session B logged out".to_owned()];
        assert_eq!(
            waiting(&campaign(RUNNING, 0), &left, None, None, &both, 2, 1_000).1,
            None
        );
        let (why, eta) = waiting(
            &campaign(SCHEDULED, 9_000),
            &left,
            None,
            None,
            &[],
            1,
            1_000,
        );
        assert_eq!(
            (why.as_deref(), eta),
            (Some("scheduled"), Some(9_000 + 100 * 8_000))
        );
        let pause = Some((BY_HEALTH.to_owned(), Some("paused by health: x".to_owned())));
        let (why, eta) = waiting(&campaign(PAUSED, 0), &left, pause, None, &[], 1, 1_000);
        assert_eq!((why.as_deref(), eta), (Some("paused by health: x"), None));
        let user = Some((BY_USER.to_owned(), Some("paused by user".to_owned())));
        let (why, _) = waiting(&campaign(PAUSED, 0), &left, user, None, &[], 1, 1_000);
        assert_eq!(why.as_deref(), Some("paused by user"));
        let done = waiting(
            &campaign("completed", 0),
            &StatusCounts::default(),
            None,
            None,
            &[],
            1,
            0,
        );
        assert_eq!(done, (None, None));
    }

    #[test]
    fn a_run_of_failures_holds_until_reconnect_or_cooldown() {
        let s = HealthSettings::default();
        let h = row(HEALTHY, 0, None);
        assert!(
            judge(&device("connected", Some(1)), &h, 5, &s, 10)
                .0
                .is_some()
        );
        assert!(
            judge(&device("connected", Some(1)), &h, 4, &s, 10)
                .0
                .is_none()
        );
        let h = row(UNHEALTHY, 100, None);
        // Still failing, not reconnected since: unhealthy.
        assert!(
            judge(&device("connected", Some(50)), &h, 5, &s, 200)
                .0
                .is_some()
        );
        // Connected again after it was judged: tried again.
        assert!(
            judge(&device("connected", Some(150)), &h, 5, &s, 200)
                .0
                .is_none()
        );
        let later = 100 + s.failure_cooldown.as_millis() as i64;
        assert!(
            judge(&device("connected", Some(50)), &h, 5, &s, later)
                .0
                .is_none()
        );
        // Down while unhealthy: stays so until it connects.
        assert!(
            judge(&device("disconnected", Some(50)), &h, 0, &s, 200)
                .0
                .is_some()
        );
    }
}
