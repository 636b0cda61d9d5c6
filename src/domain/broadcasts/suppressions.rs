//! Opt-out: an inbound message that is one of the stop keywords (`STOP`, `BERHENTI`,
//! `UNSUBSCRIBE`; case and surrounding spaces or a final `.`/`!` do not matter) puts its sender
//! on the project's suppression list, in the transaction that stores the message. Campaigns
//! skip suppressed numbers; the list can be read and edited.

use crate::domain::Gateway;
use crate::domain::auth::Caller;
use crate::domain::messaging::normalize_phone;
use crate::domain::text::no_nul_opt;
use crate::error::{Error, Result};
use crate::storage::now_ms;
use crate::storage::suppressions::{self as store, MANUAL, SuppressionRow};

/// The words that opt a sender out.
pub const STOP_KEYWORDS: &[&str] = &["STOP", "BERHENTI", "UNSUBSCRIBE"];
/// Numbers listed per page at most.
pub const MAX_PAGE: i64 = 1000;

/// The stop keyword `text` is, if it is one.
pub fn stop_keyword(text: &str) -> Option<&'static str> {
    if text.len() > 64 {
        return None;
    }
    let word = text
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_uppercase();
    STOP_KEYWORDS.iter().copied().find(|k| *k == word)
}

#[derive(Debug, Clone)]
pub struct SuppressionView {
    pub phone: String,
    /// STOP_KEYWORD or MANUAL.
    pub reason: String,
    pub detail: Option<String>,
    pub created_at: i64,
}

impl From<SuppressionRow> for SuppressionView {
    fn from(r: SuppressionRow) -> Self {
        SuppressionView {
            phone: r.phone,
            reason: r.reason,
            detail: r.detail,
            created_at: r.created_at,
        }
    }
}

impl Gateway {
    /// A page of the project's suppressed numbers by number, after `after`; and the total.
    pub async fn list_suppressions(
        &self,
        caller: &Caller,
        after: &str,
        limit: i64,
    ) -> Result<(Vec<SuppressionView>, i64)> {
        no_nul_opt("page token", Some(after))?;
        let (p, after) = (caller.project.row.id.clone(), after.to_owned());
        let limit = limit.clamp(1, MAX_PAGE);
        let (rows, total) = self
            .db()
            .run(move |c| store::list(c, &p, &after, limit))
            .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    /// Suppresses a number (normalized as SAK numbers are); adding one twice keeps the first.
    pub async fn add_suppression(
        &self,
        caller: &Caller,
        phone: &str,
        note: Option<&str>,
    ) -> Result<SuppressionView> {
        no_nul_opt("note", note)?;
        let phone = normalize_phone(phone, &self.settings().default_country_code)?;
        let row = SuppressionRow {
            project_id: caller.project.row.id.clone(),
            phone,
            reason: MANUAL.into(),
            detail: note
                .filter(|n| !n.is_empty())
                .map(|n| n.chars().take(256).collect()),
            created_at: now_ms(),
        };
        let stored = row.clone();
        self.db().run(move |c| store::add(c, &stored)).await?;
        Ok(row.into())
    }

    pub async fn remove_suppression(&self, caller: &Caller, phone: &str) -> Result<()> {
        let phone = normalize_phone(phone, &self.settings().default_country_code)?;
        let p = caller.project.row.id.clone();
        if self.db().run(move |c| store::remove(c, &p, &phone)).await? {
            Ok(())
        } else {
            Err(Error::SuppressionNotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_keywords_match_whole_messages_only() {
        for yes in ["STOP", " stop ", "Stop.", "berhenti!", "UNSUBSCRIBE"] {
            assert!(stop_keyword(yes).is_some(), "{yes}");
        }
        for no in ["stop it", "please stop", "STOPPED", "", "unsubscribe me"] {
            assert!(stop_keyword(no).is_none(), "{no}");
        }
    }
}
