//! [`ClusterSessions`]: the domain's [`SessionControl`] on a node of a cluster. A call about a
//! session runs on this node when it owns the session and is forwarded to its owner
//! otherwise; a session nobody runs right now (between two owners, or not started) is
//! claimed here when this node may take it, or left for another node to claim within a
//! second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Membership;
use crate::error::{Error, Result};
use crate::sessions::{SessionControl, SessionState, Snapshot};
use crate::storage::{cluster, sessions};
use crate::values::SessionId;

/// Where a session runs, seen from this node.
enum Place {
    Here,
    /// Another node, answering at this address.
    There(String),
    /// It should run, but no node holds a live lease on it right now.
    Unowned,
    /// It should not run (no lease row): never started, stopped or logged out.
    Nowhere,
}

#[derive(Clone)]
pub struct ClusterSessions {
    member: Arc<Membership>,
}

/// How often a follower looks for the new owner while a session changes hands.
const FOLLOW_RETRY: Duration = Duration::from_millis(250);
/// How long a call waits for a session nobody runs to be claimed by some node.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

impl ClusterSessions {
    pub fn new(member: Arc<Membership>) -> Self {
        ClusterSessions { member }
    }

    async fn place(&self, device_id: &str) -> Result<Place> {
        if self.member.local().runs(device_id) {
            return Ok(Place::Here);
        }
        let id = device_id.to_owned();
        let lease = self
            .member
            .db()
            .run(move |c| cluster::lease_of(c, &id))
            .await?;
        Ok(match lease {
            None => Place::Nowhere,
            Some(l) if !l.live => Place::Unowned,
            Some(l) if l.owner.as_deref() == Some(self.member.node_id()) => {
                // Claimed here a moment ago and starting, or an earlier process of ours.
                Place::Unowned
            }
            Some(l) => match l.owner_url {
                Some(url) => Place::There(url),
                None => Place::Unowned,
            },
        })
    }

    /// Claims the session for this node if it may take it; otherwise marks it wanted and
    /// wakes the other nodes to claim it.
    async fn claim_or_offer(&self, device_id: &str) -> Result<()> {
        let id = device_id.to_owned();
        let exists = self
            .member
            .db()
            .run(move |c| sessions::get(c, &SessionId::from(id.as_str())))
            .await?
            .is_some();
        if !exists {
            return Err(Error::DeviceNotFound);
        }
        let (id, node, ttl) = (
            device_id.to_owned(),
            self.member.node_id().to_owned(),
            self.member.ttl_ms(),
        );
        if self.member.may_claim() {
            let held = self
                .member
                .db()
                .run(move |c| cluster::claim_one(c, &id, &node, ttl))
                .await?;
            if let Some(h) = held {
                self.member
                    .local()
                    .run_claimed(vec![h], "started on this node")
                    .await?;
            }
            return Ok(());
        }
        self.member.db().run(move |c| cluster::want(c, &id)).await?;
        self.member.peers().wake_all();
        Ok(())
    }

    /// Waits (bounded) until some node runs the session.
    async fn placed(&self, device_id: &str) -> Result<Place> {
        let until = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            match self.place(device_id).await? {
                Place::Unowned if tokio::time::Instant::now() < until => {
                    tokio::time::sleep(FOLLOW_RETRY).await;
                }
                Place::Unowned => {
                    return Err(Error::WhatsAppUnavailable(
                        "no node of the cluster has taken the session yet; retry".into(),
                    ));
                }
                p => return Ok(p),
            }
        }
    }

    /// The stored state as a snapshot (what watchers see while no node runs the session).
    async fn stored(&self, device_id: &str) -> Option<Snapshot> {
        let id = device_id.to_owned();
        let row = self
            .member
            .db()
            .run(move |c| sessions::get(c, &SessionId::from(id.as_str())))
            .await
            .ok()??;
        Some(Snapshot {
            state: SessionState::parse(&row.state),
            reason: row.state_reason,
            phone: row.phone,
            push_name: row.push_name,
            last_connected_at: row.last_connected_at,
            ..Snapshot::default()
        })
    }

    /// Feeds `tx` with the session's live state wherever it runs, across changes of owner,
    /// until nobody watches or the session should no longer run.
    async fn follow(self, device_id: String, tx: watch::Sender<Snapshot>) {
        let publish = |s: Snapshot| {
            tx.send_if_modified(|cur| {
                let changed = *cur != s;
                *cur = s;
                changed
            });
        };
        while !tx.is_closed() {
            match self.place(&device_id).await {
                Ok(Place::Here) => {
                    if let Some(mut rx) = self.member.local().watch(&device_id) {
                        loop {
                            publish(Snapshot {
                                node: Some(self.member.node_id().to_owned()),
                                ..rx.borrow_and_update().clone()
                            });
                            tokio::select! {
                                r = rx.changed() => if r.is_err() { break },
                                _ = tx.closed() => return,
                            }
                        }
                    }
                }
                Ok(Place::There(url)) => {
                    if let Err(e) = self.member.peers().follow(&url, &device_id, &tx).await {
                        tracing::debug!(device = %device_id, error = %e, "following the owner failed; looking again");
                    }
                }
                Ok(Place::Unowned) => {
                    if let Some(s) = self.stored(&device_id).await {
                        publish(s);
                    }
                }
                Ok(Place::Nowhere) => {
                    // Stopped for good: the last stored state, then the end.
                    if let Some(s) = self.stored(&device_id).await {
                        publish(s);
                    }
                    return;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_RETRY) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

#[async_trait::async_trait]
impl SessionControl for ClusterSessions {
    async fn start(&self, device_id: &str) -> Result<()> {
        match self.place(device_id).await? {
            Place::Here | Place::There(_) => Ok(()),
            Place::Unowned | Place::Nowhere => self.claim_or_offer(device_id).await,
        }
    }

    async fn stop(&self, device_id: &str) -> Result<()> {
        match self.place(device_id).await? {
            Place::There(url) => self.member.peers().stop(&url, device_id).await,
            Place::Here | Place::Unowned | Place::Nowhere => {
                self.member.stop_for_good(device_id).await
            }
        }
    }

    async fn restart(&self, device_id: &str) -> Result<()> {
        match self.place(device_id).await? {
            Place::Here => {
                if self.member.local().restart(device_id).await? {
                    return Ok(());
                }
                self.claim_or_offer(device_id).await
            }
            Place::There(url) => self.member.peers().restart(&url, device_id).await,
            Place::Unowned | Place::Nowhere => self.claim_or_offer(device_id).await,
        }
    }

    async fn snapshot(&self, device_id: &str) -> Option<Snapshot> {
        match self.place(device_id).await.ok()? {
            Place::Here => self.member.local().snapshot(device_id),
            Place::There(url) => self
                .member
                .peers()
                .snapshot(&url, device_id)
                .await
                .ok()
                .flatten(),
            Place::Unowned | Place::Nowhere => None,
        }
    }

    async fn watch(&self, device_id: &str) -> Option<watch::Receiver<Snapshot>> {
        let initial = match self.place(device_id).await.ok()? {
            Place::Nowhere => return None,
            Place::Here => self.member.local().snapshot(device_id),
            Place::There(url) => self
                .member
                .peers()
                .snapshot(&url, device_id)
                .await
                .ok()
                .flatten(),
            Place::Unowned => None,
        };
        let initial = match initial {
            Some(s) => s,
            None => self.stored(device_id).await?,
        };
        let (tx, rx) = watch::channel(initial);
        tokio::spawn(self.clone().follow(device_id.to_owned(), tx));
        Some(rx)
    }

    async fn pairing_code(&self, device_id: &str, phone: &str) -> Result<String> {
        self.start(device_id).await?;
        match self.placed(device_id).await? {
            Place::Here => self.member.local().pairing_code(device_id, phone).await,
            Place::There(url) => {
                self.member
                    .peers()
                    .pairing_code(&url, device_id, phone)
                    .await
            }
            Place::Unowned | Place::Nowhere => Err(Error::WhatsAppUnavailable(
                "the session is not running".into(),
            )),
        }
    }

    async fn logout(&self, device_id: &str) -> Result<()> {
        match self.place(device_id).await? {
            Place::There(url) => self.member.peers().logout(&url, device_id).await,
            // Here, or nobody runs it: this node does it (the store is in the database).
            _ => self.member.local().logout(device_id).await,
        }
    }

    async fn delete(&self, device_id: &str) -> Result<()> {
        self.logout(device_id).await?;
        let id = SessionId::from(device_id);
        self.member
            .db()
            .run(move |c| sessions::delete(c, &id))
            .await?;
        Ok(())
    }

    async fn check_numbers(
        &self,
        device_id: &str,
        phones: &[String],
    ) -> Result<Vec<(String, bool)>> {
        match self.place(device_id).await? {
            Place::Here => self.member.local().check_numbers(device_id, phones).await,
            Place::There(url) => {
                self.member
                    .peers()
                    .check_numbers(&url, device_id, phones)
                    .await
            }
            Place::Unowned | Place::Nowhere => Err(Error::WhatsAppUnavailable(
                "the session is not running".into(),
            )),
        }
    }

    fn notify_outbound(&self, device_id: &str) {
        if !self.member.local().notify_outbound(device_id) && !self.member.alone() {
            self.member.peers().nudge_later(device_id);
        }
    }
}
