//! The janitor: periodic upkeep of stored data. It owns which purges run, in which order and
//! with which settings; `app` only starts it.
//!
//! One pass, in one database call, in this order:
//! 1. media bytes stored longer than `media_retention` ago are dropped (a bounded batch;
//!    files of messages still waiting to be sent, and the header media of campaigns that may
//!    still send, are kept; never when the retention is off);
//! 2. queued messages past their expiry (`message_ttl` from acceptance) or out of attempts
//!    are failed, each with its `message.status` event;
//! 3. idempotency keys and usage counters past their expiry are forgotten;
//! 4. request signatures that left the signing window are forgotten (replay guard);
//! 5. events older than the webhook `retention` whose deliveries are all finished are
//!    forgotten, with those deliveries.
//!
//! A pass runs at start, then every `janitor_interval`.

use tokio::sync::watch;

use super::Gateway;
use crate::error::Result;
use crate::storage::messages::{self, queue};
use crate::storage::{events, media, now_ms, projects};

/// Media files dropped per pass, so that one pass stays short; the rest go at the next.
const MEDIA_BATCH: i64 = 500;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Queued messages failed (expired or out of attempts).
    pub failed: usize,
    /// Rows forgotten and media files dropped.
    pub purged: usize,
}

impl Gateway {
    /// Runs the janitor until `stop` turns true; a pass under way finishes first.
    pub async fn run_janitor(&self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.settings().janitor_interval);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = every.tick() => match self.sweep().await {
                    Ok(Sweep { failed, purged }) if failed + purged > 0 => {
                        tracing::info!(failed, purged, "janitor")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "janitor failed"),
                },
            }
        }
    }

    /// One pass of the janitor (see the module's documentation for what it does).
    async fn sweep(&self) -> Result<Sweep> {
        let retention = self.settings().webhooks.retention.as_millis() as i64;
        let media_retention = self
            .settings()
            .media_retention
            .map(|d| d.as_millis() as i64);
        self.db()
            .run(move |c| {
                let now = now_ms();
                let media = match media_retention {
                    Some(keep) => media::purge_media(c, now - keep, now, MEDIA_BATCH)?,
                    None => 0,
                };
                Ok(Sweep {
                    failed: queue::expire_and_exhaust(c, now)?,
                    purged: messages::purge_expired(c, now)?
                        + projects::purge_signatures(c, now)?
                        + events::purge(c, now - retention)?
                        + media,
                })
            })
            .await
    }
}
