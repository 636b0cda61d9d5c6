//! The connection log: every chat connection the server accepted (after its
//! Noise handshake), which device it logged in as, when its client last sent
//! a frame, and how it ended; and the overlap check built on it.
//!
//! It exists so tests can tell whether two connections of one device (one
//! linked session) were ever in use at the same time: two processes running
//! one session corrupt its Signal ratchets even though the service replaces
//! the older connection as soon as the newer one logs in.
//!
//! Timestamps (`*_at`) are milliseconds since the Unix epoch, for reading;
//! the overlap check orders logins and frames by `*_seq`, a server-wide
//! sequence every login and every inbound frame draws from, so it has no
//! ties at millisecond resolution and no dependence on the wall clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::state::now_millis;

/// Connections kept in the log; beyond it the oldest entries are dropped.
pub const MAX_CONN_LOG: usize = 10_000;

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client closed the websocket (close frame or end of stream).
    ClientClosed,
    /// Reading from or writing to the socket failed.
    SocketError,
    /// The client sent a frame that failed to decrypt, unframe or decode, or
    /// a malformed registration payload.
    ProtocolError,
    /// A newer connection of the same device logged in; this one got
    /// `<stream:error><conflict type="replaced"/></stream:error>`.
    Replaced,
    /// The client sent no frame for the simulator's idle timeout.
    IdleTimeout,
    /// Dropped by the admin's kick.
    Kicked,
    /// Dropped because the account was banned.
    Banned,
    /// The device was unlinked (logout or companion removal, stream error 401).
    LoggedOut,
    /// The login (or registration) was refused with `<failure>`: unknown or
    /// removed device, foreign Noise key, ban, outdated client.
    LoginRefused,
    /// Pairing finished: the client was told to reconnect and log in
    /// (stream error 515).
    PairingDone,
    /// The client fell too far behind the stanzas sent to it.
    Overloaded,
    /// The server shut down.
    ServerShutdown,
}

/// One connection as the log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// The connection id (increasing in order of acceptance).
    pub id: u64,
    /// The device JID (`PHONE:DEV@s.whatsapp.net`) once the connection has
    /// logged in as a device; `None` for a connection that never did (a
    /// pairing/QR connection, a refused login).
    pub device: Option<String>,
    /// When the handshake completed.
    pub opened_at: u64,
    /// When the server answered its login with `<success>`.
    pub logged_in_at: Option<u64>,
    /// The login's place in the server-wide event sequence.
    pub logged_in_seq: Option<u64>,
    /// When the last frame from the client arrived (the handshake's last
    /// frame until the first stanza).
    pub last_frame_at: u64,
    /// That frame's place in the server-wide event sequence.
    pub last_frame_seq: u64,
    /// Frames received from the client after the handshake.
    pub frames: u64,
    /// When the connection closed; `None` while it is open.
    pub closed_at: Option<u64>,
    /// How it ended; `None` while it is open.
    pub end: Option<EndReason>,
    /// The connection that replaced this one (when `end` is `replaced`).
    pub replaced_by: Option<u64>,
}

impl ConnRecord {
    /// The interval during which the connection was a session *in use*, in
    /// the server-wide event sequence: from its login (`logged_in_seq`) to
    /// the last frame its client sent (`last_frame_seq`), both inclusive (see
    /// [`overlaps`]). `None` for a connection that never logged in, or whose
    /// client sent nothing after its login.
    pub fn in_use(&self) -> Option<(u64, u64)> {
        let from = self.logged_in_seq?;
        (self.last_frame_seq > from).then_some((from, self.last_frame_seq))
    }

    /// Whether this connection belongs to `query`: a device JID
    /// (`PHONE:DEV@s.whatsapp.net`, or `PHONE:DEV`) matches that device only;
    /// a phone number (`PHONE`, or `PHONE@s.whatsapp.net`) matches every
    /// device of the account.
    pub fn is_of(&self, query: &str) -> bool {
        let Some(device) = &self.device else {
            return false;
        };
        let user = |s: &'_ str| s.split('@').next().unwrap_or_default().to_string();
        let (q, d) = (user(query), user(device));
        if q.contains(':') {
            q == d
        } else {
            d.split(':').next() == Some(q.as_str())
        }
    }
}

/// Two connections of one device whose *in use* intervals intersect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    pub device: String,
    /// The connection that logged in first.
    pub first: u64,
    /// The connection that logged in later, while `first` was still in use.
    pub second: u64,
    /// When both were in use, `[from, to]` (ms): from the login of `second`
    /// to the earlier of the two last frames (`first`'s, unless `second`
    /// went silent first).
    pub from: u64,
    pub to: u64,
}

/// The connections of each device that were in use at the same time.
///
/// A connection is *in use* from its login (`logged_in_at`) to the last frame
/// its client sent (`last_frame_at`), both inclusive; a connection that never
/// logged in, or whose client sent nothing after the login (its last frame is
/// the handshake's, before it), is never in use. An open socket whose client
/// has gone silent — a paused or frozen process, a half-dead TCP connection —
/// is therefore not a session in use after its last frame, even though the
/// server has not closed it yet: a process that sends nothing cannot advance
/// the session's Signal ratchets. Two connections of one device *overlap*
/// when their in-use intervals intersect, i.e. the later one logged in before
/// the earlier one's last frame arrived. Logins and frames are compared in
/// the order the server saw them (`logged_in_seq`, `last_frame_seq`), not by
/// their millisecond times, so a frame and a login in the same millisecond
/// are still told apart.
///
/// A clean hand-over (the old process stops, or falls silent, before the new
/// one logs in) shows no overlap, even when the service only closes the old
/// socket as `replaced` on the new login. Two live processes on one session
/// overlap: the old one sent a frame after the new one had logged in.
///
/// The answer lists each overlapping pair once (`first` logged in no later
/// than `second`), ordered by device, then `first`, then `second`.
pub fn overlaps(records: &[ConnRecord]) -> Vec<Overlap> {
    /// A connection's in-use interval (event sequence) and its record.
    type Span<'a> = ((u64, u64), &'a ConnRecord);
    let mut by_device: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for r in records {
        if let (Some(d), Some(span)) = (&r.device, r.in_use()) {
            by_device.entry(d).or_default().push((span, r));
        }
    }
    let mut out = Vec::new();
    for (device, mut spans) in by_device {
        spans.sort_unstable_by_key(|(span, r)| (*span, r.id));
        for (i, &((_, end_a), a)) in spans.iter().enumerate() {
            // Sorted by start: only later spans starting within `a` can meet it.
            for &((_, end_b), b) in spans[i + 1..].iter().take_while(|(s, _)| s.0 <= end_a) {
                let from = b.logged_in_at.unwrap_or_default();
                let to = if end_a <= end_b {
                    a.last_frame_at
                } else {
                    b.last_frame_at
                };
                out.push(Overlap {
                    device: device.to_string(),
                    first: a.id,
                    second: b.id,
                    from,
                    // A wall clock stepped back must not invert the interval.
                    to: to.max(from),
                });
            }
        }
    }
    out.sort_by(|x, y| (&x.device, x.first, x.second).cmp(&(&y.device, y.first, y.second)));
    out
}

/// The server-wide event sequence: logins and inbound frames draw from it.
#[derive(Debug, Default)]
struct Sequence(AtomicU64);

impl Sequence {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// What a connection's task updates without taking the simulator's lock.
#[derive(Debug)]
pub struct Activity {
    seq: Arc<Sequence>,
    last_frame_at: AtomicU64,
    last_frame_seq: AtomicU64,
    frames: AtomicU64,
}

impl Activity {
    /// A frame arrived from the client.
    pub fn frame(&self) {
        self.last_frame_seq.store(self.seq.next(), Ordering::SeqCst);
        self.last_frame_at.store(now_millis(), Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }
}

struct Entry {
    record: ConnRecord,
    activity: Arc<Activity>,
}

/// The bounded log of connections, oldest first.
#[derive(Default)]
pub struct ConnLog {
    entries: VecDeque<Entry>,
    seq: Arc<Sequence>,
}

impl ConnLog {
    /// Records a connection opened now; returns what its task updates.
    pub fn open(&mut self, id: u64) -> Arc<Activity> {
        let now = now_millis();
        // The handshake's last frame stands as the client's latest.
        let frame_seq = self.seq.next();
        let activity = Arc::new(Activity {
            seq: self.seq.clone(),
            last_frame_at: AtomicU64::new(now),
            last_frame_seq: AtomicU64::new(frame_seq),
            frames: AtomicU64::new(0),
        });
        if self.entries.len() >= MAX_CONN_LOG {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            record: ConnRecord {
                id,
                device: None,
                opened_at: now,
                logged_in_at: None,
                logged_in_seq: None,
                last_frame_at: now,
                last_frame_seq: frame_seq,
                frames: 0,
                closed_at: None,
                end: None,
                replaced_by: None,
            },
            activity: activity.clone(),
        });
        activity
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut ConnRecord> {
        let pos = self
            .entries
            .binary_search_by_key(&id, |e| e.record.id)
            .ok()?;
        Some(&mut self.entries[pos].record)
    }

    /// The connection logged in as `device`.
    pub fn logged_in(&mut self, id: u64, device: String) {
        let seq = self.seq.next();
        if let Some(r) = self.get_mut(id) {
            r.device = Some(device);
            r.logged_in_at = Some(now_millis());
            r.logged_in_seq = Some(seq);
        }
    }

    /// The connection `id` was replaced by the newer connection `by`.
    pub fn replaced(&mut self, id: u64, by: u64) {
        if let Some(r) = self.get_mut(id) {
            r.replaced_by = Some(by);
        }
    }

    /// The connection closed now, for `reason`.
    pub fn closed(&mut self, id: u64, reason: EndReason) {
        if let Some(r) = self.get_mut(id)
            && r.closed_at.is_none()
        {
            r.closed_at = Some(now_millis());
            r.end = Some(reason);
        }
    }

    /// Every logged connection, oldest first, with its current activity;
    /// `device` (see [`ConnRecord::is_of`]) keeps only that device's.
    pub fn snapshot(&self, device: Option<&str>) -> Vec<ConnRecord> {
        self.entries
            .iter()
            .filter(|e| device.is_none_or(|d| e.record.is_of(d)))
            .map(|e| {
                let mut r = e.record.clone();
                r.last_frame_seq = e.activity.last_frame_seq.load(Ordering::SeqCst);
                r.last_frame_at = e.activity.last_frame_at.load(Ordering::Relaxed);
                r.frames = e.activity.frames.load(Ordering::Relaxed);
                r
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose events' sequence numbers follow their times (10 per ms).
    fn rec(id: u64, device: &str, logged_in: Option<u64>, last_frame: u64) -> ConnRecord {
        rec_seq(
            id,
            device,
            logged_in.map(|t| (t, t * 10)),
            (last_frame, last_frame * 10),
        )
    }

    /// A record with explicit (ms, seq) login and last frame.
    fn rec_seq(
        id: u64,
        device: &str,
        logged_in: Option<(u64, u64)>,
        last_frame: (u64, u64),
    ) -> ConnRecord {
        ConnRecord {
            id,
            device: logged_in.map(|_| device.to_string()),
            opened_at: logged_in.map_or(last_frame.0, |l| l.0),
            logged_in_at: logged_in.map(|l| l.0),
            logged_in_seq: logged_in.map(|l| l.1),
            last_frame_at: last_frame.0,
            last_frame_seq: last_frame.1,
            frames: 0,
            closed_at: None,
            end: None,
            replaced_by: None,
        }
    }

    const D1: &str = "15550001:1@s.whatsapp.net";
    const D2: &str = "15550001:2@s.whatsapp.net";

    #[test]
    fn sequential_connections_do_not_overlap() {
        let log = [rec(1, D1, Some(100), 200), rec(2, D1, Some(201), 300)];
        assert!(overlaps(&log).is_empty());
    }

    #[test]
    fn a_frame_after_the_next_login_overlaps() {
        let log = [rec(1, D1, Some(100), 250), rec(2, D1, Some(200), 300)];
        assert_eq!(
            overlaps(&log),
            vec![Overlap {
                device: D1.into(),
                first: 1,
                second: 2,
                from: 200,
                to: 250
            }]
        );
    }

    #[test]
    fn every_overlapping_pair_is_listed_once() {
        let log = [
            rec(3, D1, Some(900), 1100),
            rec(1, D1, Some(100), 1000),
            rec(2, D1, Some(200), 300),
        ];
        let pairs: Vec<_> = overlaps(&log)
            .iter()
            .map(|o| (o.first, o.second, o.from, o.to))
            .collect();
        // 2 lies within 1; 3 logged in while 1 was still in use.
        assert_eq!(pairs, vec![(1, 2, 200, 300), (1, 3, 900, 1000)]);
    }

    #[test]
    fn the_order_not_the_millisecond_decides() {
        // Connection 1's last frame and connection 2's login in one millisecond.
        let old = |frame_seq| rec_seq(1, D1, Some((100, 1)), (500, frame_seq));
        let new = rec_seq(2, D1, Some((500, 50)), (600, 60));
        assert!(overlaps(&[old(49), new.clone()]).is_empty());
        let found = overlaps(&[old(51), new]);
        assert_eq!((found[0].from, found[0].to), (500, 500));
    }

    #[test]
    fn other_devices_and_unlogged_connections_never_overlap() {
        let log = [
            rec(1, D1, Some(100), 500),
            rec(2, D2, Some(200), 300),
            rec(3, D1, None, 400),
        ];
        assert!(overlaps(&log).is_empty());
    }

    #[test]
    fn a_login_without_a_later_frame_is_not_in_use() {
        // Connection 1 was abandoned by its client right after `<success>`.
        let log = [rec(1, D1, Some(100), 99), rec(2, D1, Some(100), 300)];
        assert_eq!(log[0].in_use(), None);
        assert!(overlaps(&log).is_empty());
    }

    #[test]
    fn a_silent_socket_is_not_in_use() {
        // Connection 1 stays open (a paused process) but sent its last frame
        // before connection 2 logged in.
        let log = [rec(1, D1, Some(100), 150), rec(2, D1, Some(5000), 6000)];
        assert!(overlaps(&log).is_empty());
    }

    #[test]
    fn device_queries_match_jid_or_phone() {
        let r = rec(1, D1, Some(1), 1);
        assert!(r.is_of(D1));
        assert!(r.is_of("15550001:1"));
        assert!(r.is_of("15550001"));
        assert!(r.is_of("15550001@s.whatsapp.net"));
        assert!(!r.is_of(D2));
        assert!(!r.is_of("1555000"));
        assert!(!rec(2, D1, None, 1).is_of("15550001"));
    }

    #[test]
    fn the_log_is_bounded_and_tracks_activity() {
        let mut log = ConnLog::default();
        for id in 1..=(MAX_CONN_LOG as u64 + 5) {
            log.open(id);
        }
        assert_eq!(log.len(), MAX_CONN_LOG);
        let newest = MAX_CONN_LOG as u64 + 5;
        let act = log.open(newest + 1);
        log.logged_in(newest + 1, D1.into());
        act.frame();
        log.closed(newest + 1, EndReason::Kicked);
        log.closed(newest + 1, EndReason::ClientClosed);
        let all = log.snapshot(None);
        assert_eq!(all[0].id, 7);
        let last = log.snapshot(Some(D1));
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].frames, 1);
        assert_eq!(
            last[0].end,
            Some(EndReason::Kicked),
            "the first reason wins"
        );
        assert!(last[0].closed_at.is_some() && last[0].logged_in_at.is_some());
    }
}
