//! The number check: which numbers are on WhatsApp, asked through one of the project's
//! connected sessions (a usync query, as WhatsApp's own clients ask), at most
//! [`MAX_NUMBERS`] per call. Answers are cached per project for [`CHECK_TTL_MS`]: WhatsApp
//! watches how often an account looks numbers up, so a number is asked about once in a
//! while, not on every check or send.
//!
//! A campaign created with `skip_unregistered` checks its recipients before dispatch, a batch
//! of upcoming recipients at a time through the recipient's own session, and fails those
//! not on WhatsApp with `NOT_ON_WHATSAPP` instead of sending to them. A number WhatsApp does
//! not answer about is sent to (the check only skips what it knows is not there); while the
//! session cannot ask (not connected), the recipient is held.

use std::collections::HashMap;

use crate::domain::Gateway;
use crate::domain::auth::Caller;
use crate::domain::messaging::normalize_phone;
use crate::domain::text::no_nul;
use crate::error::{Error, Result};
use crate::sessions::{MAX_NUMBERS_PER_QUERY, SessionState};
use crate::storage::{now_ms, number_checks as store, sessions};
use crate::values::ProjectId;

/// Numbers one check takes at most.
pub const MAX_NUMBERS: usize = 500;
/// How long WhatsApp's answer about a number is reused.
pub const CHECK_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// A recipient waits this long when its session cannot ask WhatsApp.
const HOLD_MS: i64 = 30_000;

/// One number of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberCheck {
    /// As given.
    pub input: String,
    /// Normalized digits; `None` when the input is not a phone number.
    pub phone: Option<String>,
    pub on_whatsapp: bool,
}

/// What a `skip_unregistered` campaign does with a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberGate {
    Send,
    /// Not on WhatsApp: fail it (`NOT_ON_WHATSAPP`).
    Skip,
    /// The session cannot ask now: hold it until then.
    Hold {
        until: i64,
        reason: String,
    },
}

impl Gateway {
    /// Which of `numbers` are on WhatsApp, asked through `session_id` (one of the caller's
    /// sessions) or, when empty, the project's first connected session.
    pub async fn check_numbers(
        &self,
        caller: &Caller,
        session_id: &str,
        numbers: Vec<String>,
    ) -> Result<Vec<NumberCheck>> {
        if numbers.is_empty() || numbers.len() > MAX_NUMBERS {
            return Err(Error::InvalidRequest(format!(
                "a number check takes 1 to {MAX_NUMBERS} phone numbers"
            )));
        }
        for n in &numbers {
            no_nul("phone number", n)?;
        }
        let session = if session_id.trim().is_empty() {
            let p = caller.project.row.id.clone();
            self.db()
                .run(move |c| sessions::list(c, &p))
                .await?
                .into_iter()
                .find(|s| s.state == SessionState::Connected.as_str())
                .ok_or_else(|| {
                    Error::WhatsAppUnavailable(
                        "no session of the project is connected to ask WhatsApp".into(),
                    )
                })?
        } else {
            self.own_session(caller, session_id.trim()).await?
        };
        let cc = &self.settings().default_country_code;
        let phones: Vec<Option<String>> = numbers
            .iter()
            .map(|n| normalize_phone(n, cc).ok())
            .collect();
        let mut wanted: Vec<String> = phones.iter().flatten().cloned().collect();
        wanted.sort();
        wanted.dedup();
        let known = self
            .known_numbers(&caller.project.row.id, session.id.as_str(), wanted)
            .await?;
        Ok(numbers
            .into_iter()
            .zip(phones)
            .map(|(input, phone)| NumberCheck {
                on_whatsapp: phone
                    .as_ref()
                    .and_then(|p| known.get(p))
                    .copied()
                    .unwrap_or(false),
                input,
                phone,
            })
            .collect())
    }

    /// What is known of `phones` on WhatsApp: the fresh cached answers, and WhatsApp's for
    /// the rest (asked through `device_id` in queries of [`MAX_NUMBERS_PER_QUERY`], then
    /// cached). A number WhatsApp did not answer about is missing.
    async fn known_numbers(
        &self,
        project: &ProjectId,
        device_id: &str,
        phones: Vec<String>,
    ) -> Result<HashMap<String, bool>> {
        let now = now_ms();
        let (p, asked) = (project.clone(), phones.clone());
        let mut known: HashMap<String, bool> = self
            .db()
            .run(move |c| store::cached_numbers(c, &p, &asked, now - CHECK_TTL_MS))
            .await?
            .into_iter()
            .collect();
        let missing: Vec<String> = phones
            .into_iter()
            .filter(|p| !known.contains_key(p))
            .collect();
        for chunk in missing.chunks(MAX_NUMBERS_PER_QUERY) {
            let answers = self.sessions().check_numbers(device_id, chunk).await?;
            let (p, stored) = (project.clone(), answers.clone());
            self.db()
                .run(move |c| store::store_numbers(c, &p, &stored, now_ms()))
                .await?;
            known.extend(answers);
        }
        Ok(known)
    }

    /// Whether a `skip_unregistered` campaign sends to recipient `seq` (`phone`) of campaign
    /// `broadcast_id`, through `device_id`. An unknown number is checked with the campaign's
    /// next recipients, so a campaign asks WhatsApp once per batch, not once per recipient.
    pub(super) async fn number_gate(
        &self,
        project: &ProjectId,
        device_id: &str,
        broadcast_id: &str,
        seq: i64,
        phone: &str,
    ) -> Result<NumberGate> {
        let (p, one) = (project.clone(), vec![phone.to_owned()]);
        let since = now_ms() - CHECK_TTL_MS;
        let cached = self
            .db()
            .run(move |c| store::cached_numbers(c, &p, &one, since))
            .await?;
        if let Some((_, on)) = cached.first() {
            return Ok(if *on {
                NumberGate::Send
            } else {
                NumberGate::Skip
            });
        }
        let (bid, limit) = (broadcast_id.to_owned(), MAX_NUMBERS_PER_QUERY as i64);
        let mut batch = self
            .db()
            .run(move |c| store::upcoming_phones(c, &bid, seq, limit))
            .await?;
        if !batch.iter().any(|p| p == phone) {
            batch.truncate(MAX_NUMBERS_PER_QUERY - 1);
            batch.push(phone.to_owned());
        }
        batch.sort();
        batch.dedup();
        match self.known_numbers(project, device_id, batch).await {
            Ok(known) => Ok(match known.get(phone) {
                Some(false) => NumberGate::Skip,
                _ => NumberGate::Send,
            }),
            // Whatever stops the check (the session disconnected, moving between nodes, the
            // database busy), the recipient waits and is checked again.
            Err(e) => Ok(NumberGate::Hold {
                until: now_ms() + HOLD_MS,
                reason: format!("checking the number on WhatsApp: {}", e.public_message()),
            }),
        }
    }
}
