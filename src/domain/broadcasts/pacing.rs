//! Pacing: how fast a session may send, against bans. Bulk sending from a linked device is
//! what gets numbers banned; what WhatsApp's abuse detection looks at is the shape of the
//! traffic — bursts, machine-steady intervals, many first contacts in a day, a freshly
//! linked account sending at full volume, messages at night, messages that appear without
//! anyone typing them. So every paced message of a session takes a slot decided here:
//!
//! - **quiet hours** in the project's time zone hold it until the window opens;
//! - a **daily cap** and a **cap of new contacts** per session and local day hold it until
//!   the next day; a session linked recently gets a **warm-up** share of both caps;
//! - a **random gap** separates two messages of a session (the previous one's typing time
//!   included, so the gap holds between arrivals);
//! - a **typing indicator** precedes the message, longer for a longer text (the session
//!   sends it, `sessions::outbound`).
//!
//! A project's policy ([`Policy`]) is stored in the database (absent: the gateway's
//! defaults, [`Policy::defaults`]); a campaign may override its gap and daily cap. The slot
//! book is the database's too (`storage::pacing`), so neither a restart nor a failover
//! resets a cap or lets a burst out. Campaign messages are always paced (held recipients say
//! why); with [`Policy::all_messages`] every outbound message of the project is (held
//! messages stay queued with a later `available_at`: pacing never drops a message).

use super::campaigns::BroadcastSettings;
use crate::domain::Gateway;
use crate::domain::auth::Caller;
use crate::error::{Error, Result};
use crate::storage::pacing::{self as store, Ask, Pace, PolicyRow, Why};
use crate::storage::{DbConn, now_ms};
use crate::values::ProjectId;

/// Longest gap a policy or a campaign may ask for between two messages of a session.
pub const MAX_GAP_MS: i64 = 3600 * 1000;
/// Longest typing indicator (a longer one delays the whole queue of the session).
pub const MAX_TYPING_MS: i64 = 30_000;
/// Typing time per character of the text, between the policy's bounds (a quick typist:
/// about 3 characters a second is real typing; shorter keeps campaigns moving).
const TYPING_MS_PER_CHAR: i64 = 40;
/// Longest warm-up ramp.
const MAX_WARMUP_DAYS: i32 = 90;
const DAY_MS: i64 = 24 * 3600 * 1000;
const MINUTES_PER_DAY: i32 = 24 * 60;

/// A project's send policy: see the module's doc for why each part exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The gap between two paced messages of a session is random in this range.
    pub min_gap_ms: i64,
    pub max_gap_ms: i64,
    /// Paced messages per session and local day (0: no cap).
    pub daily_cap: i64,
    /// Of those, to numbers the session never talked with (0: no cap).
    pub new_contact_cap: i64,
    /// A session linked less than this many days ago gets `warmup_start_pct` % of both caps
    /// on its first day, rising evenly to 100 % (0: no ramp).
    pub warmup_days: i32,
    pub warmup_start_pct: i32,
    /// Quiet hours, minutes after local midnight `[start, end)` (wrapping past midnight
    /// when start > end); nothing paced goes out then.
    pub quiet: Option<(i32, i32)>,
    /// The project's time zone as a fixed offset from UTC, in minutes (no time-zone database
    /// is in the build: a zone with daylight saving needs its offset changed twice a year).
    pub utc_offset_min: i32,
    /// A typing indicator before each paced message, from `typing_min_ms` (short texts) to
    /// `typing_max_ms` (long ones).
    pub typing: bool,
    pub typing_min_ms: i64,
    pub typing_max_ms: i64,
    /// Pace every outbound message of the project, not only campaigns.
    pub all_messages: bool,
}

impl Policy {
    /// The gateway's defaults (`Settings::broadcasts`), for a project that set none.
    pub fn defaults(s: &BroadcastSettings) -> Policy {
        Policy {
            min_gap_ms: s.pacing_min.as_millis() as i64,
            max_gap_ms: s.pacing_max.as_millis() as i64,
            daily_cap: s.daily_cap,
            new_contact_cap: s.new_contact_cap,
            warmup_days: s.warmup_days,
            warmup_start_pct: s.warmup_start_pct,
            quiet: None,
            utc_offset_min: 0,
            typing: !s.typing_max.is_zero(),
            typing_min_ms: s.typing_min.min(s.typing_max).as_millis() as i64,
            typing_max_ms: s.typing_max.as_millis() as i64,
            all_messages: false,
        }
    }

    /// The project's stored policy, else the defaults.
    pub fn of(row: Option<PolicyRow>, defaults: &Policy) -> Policy {
        let Some(r) = row else {
            return defaults.clone();
        };
        Policy {
            min_gap_ms: r.min_gap_ms,
            max_gap_ms: r.max_gap_ms,
            daily_cap: r.daily_cap,
            new_contact_cap: r.new_contact_cap,
            warmup_days: r.warmup_days,
            warmup_start_pct: r.warmup_start_pct,
            quiet: r.quiet_start_min.zip(r.quiet_end_min),
            utc_offset_min: r.utc_offset_min,
            typing: r.typing,
            typing_min_ms: r.typing_min_ms,
            typing_max_ms: r.typing_max_ms,
            all_messages: r.all_messages,
        }
    }

    fn row(&self, project_id: ProjectId, now: i64) -> PolicyRow {
        PolicyRow {
            project_id,
            min_gap_ms: self.min_gap_ms,
            max_gap_ms: self.max_gap_ms,
            daily_cap: self.daily_cap,
            new_contact_cap: self.new_contact_cap,
            warmup_days: self.warmup_days,
            warmup_start_pct: self.warmup_start_pct,
            quiet_start_min: self.quiet.map(|q| q.0),
            quiet_end_min: self.quiet.map(|q| q.1),
            utc_offset_min: self.utc_offset_min,
            typing: self.typing,
            typing_min_ms: self.typing_min_ms,
            typing_max_ms: self.typing_max_ms,
            all_messages: self.all_messages,
            updated_at: now,
        }
    }

    /// Refuses a policy that cannot be applied.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(format!("send policy: {m}")));
        if !(0..=MAX_GAP_MS).contains(&self.min_gap_ms)
            || !(self.min_gap_ms..=MAX_GAP_MS).contains(&self.max_gap_ms)
        {
            return bad(format!(
                "the gap is 0 to {MAX_GAP_MS} ms, its minimum not above its maximum"
            ));
        }
        if self.daily_cap < 0 || self.new_contact_cap < 0 {
            return bad("caps are 0 (none) or more".into());
        }
        if !(0..=MAX_WARMUP_DAYS).contains(&self.warmup_days)
            || !(1..=100).contains(&self.warmup_start_pct)
        {
            return bad(format!(
                "warm-up lasts 0 to {MAX_WARMUP_DAYS} days and starts at 1 to 100 %"
            ));
        }
        if let Some((a, b)) = self.quiet
            && (!(0..MINUTES_PER_DAY).contains(&a) || !(0..MINUTES_PER_DAY).contains(&b) || a == b)
        {
            return bad("quiet hours are two different times of day, HH:MM".into());
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_min) {
            return bad("the UTC offset is -14:00 to +14:00".into());
        }
        if !(0..=MAX_TYPING_MS).contains(&self.typing_min_ms)
            || !(self.typing_min_ms..=MAX_TYPING_MS).contains(&self.typing_max_ms)
        {
            return bad(format!(
                "typing lasts 0 to {MAX_TYPING_MS} ms, its minimum not above its maximum"
            ));
        }
        Ok(())
    }

    /// How long the typing indicator shows before a text of `chars` characters (0: none).
    pub fn typing_ms(&self, chars: usize) -> i64 {
        if !self.typing || self.typing_max_ms == 0 {
            return 0;
        }
        let grown = self
            .typing_min_ms
            .saturating_add((chars as i64).saturating_mul(TYPING_MS_PER_CHAR));
        grown.clamp(self.typing_min_ms, self.typing_max_ms)
    }

    /// Minutes after local midnight at `now`.
    fn local_minute(&self, now: i64) -> i32 {
        let local = now + i64::from(self.utc_offset_min) * 60_000;
        (local.rem_euclid(DAY_MS) / 60_000) as i32
    }

    /// When the quiet hours around `now` end, if `now` is inside them.
    pub fn quiet_until(&self, now: i64) -> Option<i64> {
        let (start, end) = self.quiet?;
        let m = self.local_minute(now);
        let inside = if start < end {
            (start..end).contains(&m)
        } else {
            m >= start || m < end
        };
        if !inside {
            return None;
        }
        let left = (end - m).rem_euclid(MINUTES_PER_DAY);
        // The start of the current minute, plus the minutes left.
        Some(now - now.rem_euclid(60_000) + i64::from(left) * 60_000)
    }

    /// The local day of `now` (`YYYY-MM-DD`) and when the next one starts (Unix ms).
    pub fn local_day(&self, now: i64) -> (String, i64) {
        let offset = i64::from(self.utc_offset_min) * 60_000;
        let local = now + offset;
        let start = local - local.rem_euclid(DAY_MS);
        let day = chrono::DateTime::from_timestamp_millis(start)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        (day, start + DAY_MS - offset)
    }

    /// The share of the caps (percent) a session linked at `linked_at` gets at `now`: day 0
    /// of the link `warmup_start_pct`, then evenly up to 100 on day `warmup_days`.
    pub fn warmup_pct(&self, linked_at: Option<i64>, now: i64) -> i64 {
        let Some(linked) = linked_at else {
            return 100;
        };
        let days = i64::from(self.warmup_days);
        let day = (now - linked).max(0) / DAY_MS;
        if days == 0 || day >= days {
            return 100;
        }
        let start = i64::from(self.warmup_start_pct);
        start + (100 - start) * day / days
    }

    pub fn quiet_text(&self) -> String {
        let hm = |m: i32| format!("{:02}:{:02}", m / 60, m % 60);
        match self.quiet {
            Some((a, b)) => format!(
                "{}–{} at {}",
                hm(a),
                hm(b),
                offset_text(self.utc_offset_min)
            ),
            None => String::new(),
        }
    }
}

/// A cap scaled by the warm-up share: 0 stays "no cap", anything else at least 1.
fn scaled(cap: i64, pct: i64) -> i64 {
    if cap == 0 {
        return 0;
    }
    ((cap * pct + 99) / 100).max(1)
}

/// `+07:00` from minutes east of UTC.
pub fn offset_text(min: i32) -> String {
    let sign = if min < 0 { '-' } else { '+' };
    let m = min.unsigned_abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// Minutes east of UTC from `+07:00`, `-03:30`, `Z` or `UTC`.
pub fn parse_offset(s: &str) -> Result<i32> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") || s.is_empty() {
        return Ok(0);
    }
    let bad = || {
        Error::InvalidRequest(format!(
            "send policy: time zone {s:?} is not a UTC offset like +07:00"
        ))
    };
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let m = parse_hm(rest).ok_or_else(bad)?;
    Ok(sign * m)
}

/// Minutes after midnight from `HH:MM`.
pub fn parse_time(s: &str) -> Result<i32> {
    parse_hm(s.trim())
        .filter(|m| *m < MINUTES_PER_DAY)
        .ok_or_else(|| {
            Error::InvalidRequest(format!("send policy: {s:?} is not a time of day (HH:MM)"))
        })
}

fn parse_hm(s: &str) -> Option<i32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `HH:MM` from minutes after midnight.
pub fn time_text(m: i32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// A random gap in `[min, max]`.
pub fn gap_ms(min: i64, max: i64) -> i64 {
    if max <= min {
        return min;
    }
    let r = i64::from(u32::from_le_bytes(crate::crypto::random_bytes::<4>()));
    min + r % (max - min + 1)
}

/// A change of a project's policy: each field `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct PolicyPatch {
    pub min_gap_ms: Option<i64>,
    pub max_gap_ms: Option<i64>,
    pub daily_cap: Option<i64>,
    pub new_contact_cap: Option<i64>,
    pub warmup_days: Option<i32>,
    pub warmup_start_pct: Option<i32>,
    /// `Some(None)` turns quiet hours off.
    pub quiet: Option<Option<(i32, i32)>>,
    pub utc_offset_min: Option<i32>,
    pub typing: Option<bool>,
    pub typing_min_ms: Option<i64>,
    pub typing_max_ms: Option<i64>,
    pub all_messages: Option<bool>,
}

impl PolicyPatch {
    fn apply(self, mut p: Policy) -> Policy {
        let patch = self;
        macro_rules! set {
            ($from:ident, $to:ident; $($f:ident),*) => {
                $( if let Some(v) = $from.$f { $to.$f = v; } )*
            };
        }
        set!(
            patch, p;
            min_gap_ms,
            max_gap_ms,
            daily_cap,
            new_contact_cap,
            warmup_days,
            warmup_start_pct,
            quiet,
            utc_offset_min,
            typing,
            typing_min_ms,
            typing_max_ms,
            all_messages
        );
        p
    }
}

/// One message asking for a slot of its session.
#[derive(Debug, Clone, Copy)]
pub struct SlotRequest<'a> {
    pub device_id: &'a str,
    pub phone: &'a str,
    /// The message itself when it is already stored (not a contact of its own).
    pub message_id: Option<&'a str>,
    /// Characters of its text (the typing time).
    pub chars: usize,
    /// The gap range and daily cap that apply (a campaign's own, or the policy's).
    pub min_gap_ms: i64,
    pub max_gap_ms: i64,
    pub daily_cap: i64,
}

impl<'a> SlotRequest<'a> {
    /// With the policy's own gap and cap.
    pub fn new(policy: &Policy, device_id: &'a str, phone: &'a str, chars: usize) -> Self {
        SlotRequest {
            device_id,
            phone,
            message_id: None,
            chars,
            min_gap_ms: policy.min_gap_ms,
            max_gap_ms: policy.max_gap_ms,
            daily_cap: policy.daily_cap,
        }
    }
}

/// What pacing decided for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send now, after a typing indicator this long.
    Go { typing_ms: i64 },
    /// Not before `until`, and why.
    Hold { until: i64, reason: String },
}

/// Decides, and takes the slot when the message may go now. Runs on one connection (the
/// dispatcher's `Db::run`, or a session's fenced write).
pub fn take_slot(
    conn: &mut DbConn,
    policy: &Policy,
    req: SlotRequest<'_>,
    now: i64,
) -> Result<Decision> {
    if let Some(until) = policy.quiet_until(now) {
        return Ok(Decision::Hold {
            until,
            reason: format!("pacing: quiet hours ({})", policy.quiet_text()),
        });
    }
    let pct = policy.warmup_pct(store::linked_at(conn, req.device_id)?, now);
    let (cap, new_cap) = (
        scaled(req.daily_cap, pct),
        scaled(policy.new_contact_cap, pct),
    );
    let new_contact =
        new_cap > 0 && store::is_new_contact(conn, req.device_id, req.phone, req.message_id)?;
    let typing_ms = policy.typing_ms(req.chars);
    let (day, next_day_at) = policy.local_day(now);
    let pace = store::reserve(
        conn,
        Ask {
            device_id: req.device_id,
            now,
            gap_ms: typing_ms + gap_ms(req.min_gap_ms, req.max_gap_ms),
            cap,
            new_contact,
            new_cap,
            day: &day,
            next_day_at,
        },
    )?;
    let warmup = if pct < 100 {
        format!(", warm-up of a recently linked session: {pct} %")
    } else {
        String::new()
    };
    Ok(match pace {
        Pace::Go => Decision::Go { typing_ms },
        Pace::Wait { until, why } => Decision::Hold {
            until,
            reason: match why {
                Why::Gap => "pacing: the session's gap between messages".to_owned(),
                Why::DailyCap => {
                    format!("pacing: the session's daily cap of {cap} messages is reached{warmup}")
                }
                Why::NewContacts => format!(
                    "pacing: the session's daily cap of {new_cap} new contacts is reached{warmup}"
                ),
            },
        },
    })
}

impl Gateway {
    /// The gateway's default policy.
    pub fn default_policy(&self) -> Policy {
        Policy::defaults(&self.settings().broadcasts)
    }

    /// A project's policy (stored, else the defaults).
    pub async fn policy_of(&self, project_id: &ProjectId) -> Result<Policy> {
        let p = project_id.clone();
        let row = self.db().run(move |c| store::get_policy(c, &p)).await?;
        Ok(Policy::of(row, &self.default_policy()))
    }

    /// The caller's project's policy.
    pub async fn send_policy(&self, caller: &Caller) -> Result<Policy> {
        self.policy_of(&caller.project.row.id).await
    }

    /// Changes the caller's project's policy (the fields given), and answers the result.
    pub async fn update_send_policy(&self, caller: &Caller, patch: PolicyPatch) -> Result<Policy> {
        let current = self.send_policy(caller).await?;
        let next = patch.apply(current);
        next.validate()?;
        let row = next.row(caller.project.row.id.clone(), now_ms());
        let project = caller.project.row.id.clone();
        let released = self
            .db()
            .run(move |c| {
                c.transaction(|c| {
                    store::put_policy(c, &row)?;
                    // What the old policy held is decided again under the new one.
                    store::release_held(c, &project, row.updated_at)
                })
            })
            .await?;
        tracing::info!(project = %caller.project.row.id, released, "send policy changed");
        self.inner.broadcasts_wake.notify_one();
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::defaults(&BroadcastSettings::default())
    }

    #[test]
    fn quiet_hours_wrap_past_midnight_in_the_project_zone() {
        let p = Policy {
            quiet: Some((21 * 60, 8 * 60)),
            utc_offset_min: 7 * 60,
            ..policy()
        };
        // 2026-12-07 15:00 UTC is 22:00 in Jakarta: quiet until 08:00 Jakarta (01:00 UTC).
        let at = |h: i64, m: i64| 1_796_601_600_000 + (h * 60 + m) * 60_000;
        assert_eq!(p.quiet_until(at(15, 0)), Some(at(25, 0)));
        assert_eq!(p.quiet_until(at(0, 59)), Some(at(1, 0)));
        assert_eq!(p.quiet_until(at(1, 0)), None);
        assert_eq!(p.quiet_until(at(13, 59)), None);
        assert_eq!(p.quiet_until(at(14, 0)), Some(at(25, 0)));
    }

    #[test]
    fn local_day_follows_the_offset() {
        let p = Policy {
            utc_offset_min: 7 * 60,
            ..policy()
        };
        // 2026-12-07 18:00 UTC is already 2026-12-08 in Jakarta; it ends at 17:00 UTC.
        let t = 1_796_601_600_000 + 18 * 3_600_000;
        let (day, next) = p.local_day(t);
        assert_eq!(day, "2026-12-08");
        assert_eq!(next, 1_796_601_600_000 + 41 * 3_600_000);
    }

    #[test]
    fn warmup_ramps_from_its_start_share_to_full() {
        let p = Policy {
            warmup_days: 5,
            warmup_start_pct: 20,
            ..policy()
        };
        let now = 100 * DAY_MS;
        assert_eq!(p.warmup_pct(Some(now), now), 20);
        assert_eq!(p.warmup_pct(Some(now - 2 * DAY_MS), now), 52);
        assert_eq!(p.warmup_pct(Some(now - 5 * DAY_MS), now), 100);
        assert_eq!(p.warmup_pct(None, now), 100);
        assert_eq!(scaled(1000, 20), 200);
        assert_eq!(scaled(3, 20), 1);
        assert_eq!(scaled(0, 20), 0);
    }

    #[test]
    fn typing_grows_with_the_text_within_bounds() {
        let p = policy();
        assert_eq!(p.typing_ms(0), 1000);
        assert_eq!(p.typing_ms(50), 3000);
        assert_eq!(p.typing_ms(4000), 5000);
        let off = Policy {
            typing: false,
            ..policy()
        };
        assert_eq!(off.typing_ms(50), 0);
    }

    #[test]
    fn offsets_and_times_parse() {
        assert_eq!(parse_offset("+07:00").unwrap(), 420);
        assert_eq!(parse_offset("-03:30").unwrap(), -210);
        assert_eq!(parse_offset("UTC").unwrap(), 0);
        assert!(parse_offset("Asia/Jakarta").is_err());
        assert_eq!(offset_text(-210), "-03:30");
        assert_eq!(parse_time("21:00").unwrap(), 1260);
        assert!(parse_time("24:00").is_err());
        assert_eq!(time_text(485), "08:05");
    }
}
