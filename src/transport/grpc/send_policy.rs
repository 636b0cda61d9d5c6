//! The send policy's proto form, both ways (`GetSendPolicy`, `UpdateSendPolicy` of
//! `wagate.v1.BroadcastsService`).

use crate::domain::broadcasts::pacing::{
    Policy, PolicyPatch, offset_text, parse_offset, parse_time, time_text,
};
use crate::error::{Error, Result};
use crate::proto::v1::{SendPolicy, UpdateSendPolicyRequest};

pub(crate) fn to_proto(p: Policy) -> SendPolicy {
    let (quiet_start, quiet_end) = p
        .quiet
        .map(|(a, b)| (time_text(a), time_text(b)))
        .unwrap_or_default();
    SendPolicy {
        min_gap_ms: p.min_gap_ms,
        max_gap_ms: p.max_gap_ms,
        daily_cap: p.daily_cap,
        new_contact_cap: p.new_contact_cap,
        warmup_days: p.warmup_days,
        warmup_start_percent: p.warmup_start_pct,
        quiet_start,
        quiet_end,
        utc_offset: offset_text(p.utc_offset_min),
        typing: p.typing,
        typing_min_ms: p.typing_min_ms,
        typing_max_ms: p.typing_max_ms,
        all_messages: p.all_messages,
    }
}

pub(crate) fn patch(m: UpdateSendPolicyRequest) -> Result<PolicyPatch> {
    let quiet = match (m.quiet_start.as_deref(), m.quiet_end.as_deref()) {
        (None, None) => None,
        (Some(""), Some("")) => Some(None),
        (Some(a), Some(b)) => Some(Some((parse_time(a)?, parse_time(b)?))),
        _ => {
            return Err(Error::InvalidRequest(
                "send policy: give quiet_start and quiet_end together".into(),
            ));
        }
    };
    Ok(PolicyPatch {
        min_gap_ms: m.min_gap_ms,
        max_gap_ms: m.max_gap_ms,
        daily_cap: m.daily_cap,
        new_contact_cap: m.new_contact_cap,
        warmup_days: m.warmup_days,
        warmup_start_pct: m.warmup_start_percent,
        quiet,
        utc_offset_min: m.utc_offset.as_deref().map(parse_offset).transpose()?,
        typing: m.typing,
        typing_min_ms: m.typing_min_ms,
        typing_max_ms: m.typing_max_ms,
        all_messages: m.all_messages,
    })
}
