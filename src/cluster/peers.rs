//! Calls to other nodes (`wagate.internal.v1.NodeService`), and their authentication.
//!
//! Every call carries `x-wagate-node-auth: <node>.<unix ms>.<hex HMAC-SHA256>` over the
//! node, the time and the method path, keyed by a key derived from the master key every node
//! of a cluster shares. A token is accepted for [`TOKEN_WINDOW`] around its time, for that
//! method only; nothing secret travels.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tonic::transport::{Channel, Endpoint};

use crate::crypto::{MasterKey, hmac_sha256, verify_hmac_sha256};
use crate::error::{Error, Result};
use crate::proto::internal::node_service_client::NodeServiceClient;
use crate::proto::internal::{self as pb};
use crate::sessions::{SessionState, Snapshot};
use crate::storage::{Db, cluster, now_ms};

pub const AUTH_HEADER: &str = "x-wagate-node-auth";
/// How far a token's time may be from the receiver's clock.
pub const TOKEN_WINDOW: Duration = Duration::from_secs(30);
/// A forwarded call that is not a stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A forwarded pairing-code request waits for WhatsApp (the owner bounds it at 40 s).
const PAIRING_TIMEOUT: Duration = Duration::from_secs(45);
/// A forwarded number check waits for WhatsApp (the owner bounds it at 30 s).
const NUMBERS_TIMEOUT: Duration = Duration::from_secs(35);
/// Session ids waiting for a nudge to their owner; more are dropped (the owner polls).
const MAX_PENDING_NUDGES: usize = 10_000;

/// The key node tokens are signed with.
#[derive(Clone)]
pub struct NodeKey([u8; 32]);

impl NodeKey {
    pub fn from_master(master: &MasterKey) -> Self {
        NodeKey(master.derive("wagate node-to-node calls v1"))
    }

    pub fn token(&self, node: &str, path: &str, at_ms: i64) -> String {
        let at = at_ms.to_string();
        let mac = hmac_sha256(
            &self.0,
            &[
                node.as_bytes(),
                b"\n",
                at.as_bytes(),
                b"\n",
                path.as_bytes(),
            ],
        );
        format!("{node}.{at}.{}", hex::encode(mac))
    }

    /// The calling node's id when the token is valid for `path` now.
    pub fn verify<'a>(&self, token: &'a str, path: &str, now_ms: i64) -> Option<&'a str> {
        let (rest, mac) = token.rsplit_once('.')?;
        let (node, at) = rest.rsplit_once('.')?;
        let at_ms: i64 = at.parse().ok()?;
        if (now_ms - at_ms).unsigned_abs() > TOKEN_WINDOW.as_millis() as u64 {
            return None;
        }
        let mac = hex::decode(mac).ok()?;
        verify_hmac_sha256(
            &self.0,
            &[
                node.as_bytes(),
                b"\n",
                at.as_bytes(),
                b"\n",
                path.as_bytes(),
            ],
            &mac,
        )
        .then_some(node)
    }
}

type Client = NodeServiceClient<
    tower::util::MapRequest<
        Channel,
        Box<
            dyn Fn(axum::http::Request<tonic::body::Body>) -> axum::http::Request<tonic::body::Body>
                + Send
                + Sync,
        >,
    >,
>;

/// This node's view of the others: one lazily connected channel per address.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

struct PeersInner {
    me: String,
    key: NodeKey,
    db: Db,
    channels: Mutex<HashMap<String, Channel>>,
    nudges: Mutex<HashSet<String>>,
    nudge_wake: Notify,
}

impl Peers {
    pub fn new(me: String, key: NodeKey, db: Db) -> Self {
        Peers {
            inner: Arc::new(PeersInner {
                me,
                key,
                db,
                channels: Mutex::default(),
                nudges: Mutex::default(),
                nudge_wake: Notify::new(),
            }),
        }
    }

    fn client(&self, url: &str) -> Result<Client> {
        let channel = {
            let mut channels = self
                .inner
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match channels.get(url) {
                Some(c) => c.clone(),
                None => {
                    let c = Endpoint::from_shared(url.to_owned())
                        .map_err(|e| Error::Internal(format!("node address {url:?}: {e}")))?
                        .connect_timeout(Duration::from_secs(2))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(10))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .connect_lazy();
                    channels.insert(url.to_owned(), c.clone());
                    c
                }
            }
        };
        let (me, key) = (self.inner.me.clone(), self.inner.key.clone());
        let sign: Box<
            dyn Fn(axum::http::Request<tonic::body::Body>) -> axum::http::Request<tonic::body::Body>
                + Send
                + Sync,
        > = Box::new(move |mut req| {
            let token = key.token(&me, req.uri().path(), now_ms());
            if let Ok(v) = token.parse() {
                req.headers_mut().insert(AUTH_HEADER, v);
            }
            req
        });
        Ok(NodeServiceClient::new(tower::util::MapRequest::new(
            channel, sign,
        )))
    }

    /// One forwarded call, bounded by `limit`, its failure as the owner's error.
    async fn unary<R, F, Fut>(&self, url: &str, limit: Duration, call: F) -> Result<R>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let c = self.client(url)?;
        Ok(tokio::time::timeout(limit, call(c))
            .await
            .map_err(|_| unreachable_owner())?
            .map_err(remote_error)?
            .into_inner())
    }

    pub async fn snapshot(&self, url: &str, device_id: &str) -> Result<Option<Snapshot>> {
        let session_id = device_id.to_owned();
        let r = self
            .unary(url, Duration::from_secs(2), |mut c| async move {
                c.get_snapshot(pb::GetSnapshotRequest { session_id }).await
            })
            .await?;
        Ok(r.running
            .then(|| r.snapshot.map(from_proto).unwrap_or_default()))
    }

    /// Forwards the owner's live state into `tx` until the owner stops running the session
    /// (the stream ends) or the watchers are gone.
    pub async fn follow(
        &self,
        url: &str,
        device_id: &str,
        tx: &watch::Sender<Snapshot>,
    ) -> Result<()> {
        let mut c = self.client(url)?;
        let req = pb::WatchSnapshotRequest {
            session_id: device_id.to_owned(),
        };
        let mut stream = tokio::time::timeout(CALL_TIMEOUT, c.watch_snapshot(req))
            .await
            .map_err(|_| unreachable_owner())?
            .map_err(remote_error)?
            .into_inner();
        loop {
            tokio::select! {
                item = stream.message() => match item.map_err(remote_error)? {
                    Some(m) => {
                        let s = m.snapshot.map(from_proto).unwrap_or_default();
                        tx.send_if_modified(|cur| {
                            let changed = *cur != s;
                            *cur = s;
                            changed
                        });
                    }
                    None => return Ok(()),
                },
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    pub async fn pairing_code(&self, url: &str, device_id: &str, phone: &str) -> Result<String> {
        let (session_id, phone) = (device_id.to_owned(), phone.to_owned());
        let r = self
            .unary(url, PAIRING_TIMEOUT, |mut c| async move {
                let req = pb::RequestPairingCodeRequest { session_id, phone };
                c.request_pairing_code(req).await
            })
            .await?;
        Ok(r.code)
    }

    pub async fn check_numbers(
        &self,
        url: &str,
        device_id: &str,
        phones: &[String],
    ) -> Result<Vec<(String, bool)>> {
        let (session_id, phones) = (device_id.to_owned(), phones.to_vec());
        let r = self
            .unary(url, NUMBERS_TIMEOUT, |mut c| async move {
                let req = pb::CheckNumbersRequest { session_id, phones };
                c.check_numbers(req).await
            })
            .await?;
        Ok(r.numbers
            .into_iter()
            .map(|n| (n.phone, n.on_whatsapp))
            .collect())
    }

    pub async fn restart(&self, url: &str, device_id: &str) -> Result<()> {
        let session_id = device_id.to_owned();
        self.unary(url, CALL_TIMEOUT, |mut c| async move {
            c.restart_session(pb::RestartSessionRequest { session_id })
                .await
        })
        .await
        .map(drop)
    }

    pub async fn stop(&self, url: &str, device_id: &str) -> Result<()> {
        let session_id = device_id.to_owned();
        self.unary(url, CALL_TIMEOUT, |mut c| async move {
            c.stop_session(pb::StopSessionRequest { session_id }).await
        })
        .await
        .map(drop)
    }

    pub async fn logout(&self, url: &str, device_id: &str) -> Result<()> {
        let session_id = device_id.to_owned();
        self.unary(url, CALL_TIMEOUT, |mut c| async move {
            c.logout_session(pb::LogoutSessionRequest { session_id })
                .await
        })
        .await
        .map(drop)
    }

    /// Wakes a node's balancing at once (sessions were released); best effort.
    pub async fn wake(&self, url: &str) {
        if let Ok(mut c) = self.client(url) {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                c.nudge(pb::NudgeRequest {
                    session_ids: vec![],
                }),
            )
            .await;
        }
    }

    /// Wakes every other running node's balancing; best effort.
    pub async fn wake_others(&self) {
        let Ok(nodes) = self.inner.db.run(cluster::nodes).await else {
            return;
        };
        let me = self.inner.me.as_str();
        futures::future::join_all(
            nodes
                .iter()
                .filter(|n| n.node.id != me && n.node.stopped_at.is_none())
                .map(|n| self.wake(&n.node.advertise_url)),
        )
        .await;
    }

    /// [`Self::wake_others`] in the background.
    pub fn wake_all(&self) {
        let peers = self.clone();
        tokio::spawn(async move { peers.wake_others().await });
    }

    /// A message was queued for a session another node runs: tell its owner soon, batched
    /// with others (never blocks; the owner polls anyway).
    pub fn nudge_later(&self, device_id: &str) {
        let mut pending = self.inner.nudges.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < MAX_PENDING_NUDGES {
            pending.insert(device_id.to_owned());
        }
        drop(pending);
        self.inner.nudge_wake.notify_one();
    }

    /// Sends the batched nudges, one call per owner, until `stop`.
    pub async fn run_nudges(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.inner.nudge_wake.notified() => {}
                _ = stop.changed() => return,
            }
            let ids: Vec<String> = {
                let mut pending = self.inner.nudges.lock().unwrap_or_else(|p| p.into_inner());
                pending.drain().collect()
            };
            if ids.is_empty() {
                continue;
            }
            let owners = match self
                .inner
                .db
                .run(move |c| cluster::owner_urls(c, &ids))
                .await
            {
                Ok(o) => o,
                Err(_) => continue,
            };
            let mut by_url: HashMap<String, Vec<String>> = HashMap::new();
            for (device, url) in owners {
                by_url.entry(url).or_default().push(device);
            }
            futures::future::join_all(by_url.into_iter().map(|(url, session_ids)| {
                let peers = self.clone();
                async move {
                    if let Ok(mut c) = peers.client(&url) {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            c.nudge(pb::NudgeRequest { session_ids }),
                        )
                        .await;
                    }
                }
            }))
            .await;
        }
    }
}

fn unreachable_owner() -> Error {
    Error::Unavailable("the node that runs this session does not answer".into())
}

/// The owner's answer, as the error it was there (by its stable code) where it matters.
fn remote_error(s: tonic::Status) -> Error {
    let code = s
        .metadata()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match code {
        "DEVICE_NOT_FOUND" => Error::DeviceNotFound,
        "SESSION_MOVED" => Error::SessionMoved,
        "WHATSAPP_UNAVAILABLE" => Error::WhatsAppUnavailable(
            s.message()
                .trim_start_matches("WhatsApp is not reachable for this session: ")
                .to_owned(),
        ),
        _ if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => {
            unreachable_owner()
        }
        _ => Error::Internal(format!("node call failed: {} {}", s.code(), s.message())),
    }
}

pub fn to_proto(s: &Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        state: s.state.as_str().to_owned(),
        reason: s.reason.clone().unwrap_or_default(),
        qr_code: s.qr.as_ref().map(|q| q.0.clone()).unwrap_or_default(),
        qr_expires_at_ms: s.qr.as_ref().map_or(0, |q| q.1),
        pairing_code: s
            .pairing_code
            .as_ref()
            .map(|q| q.0.clone())
            .unwrap_or_default(),
        pairing_code_expires_at_ms: s.pairing_code.as_ref().map_or(0, |q| q.1),
        phone: s.phone.clone().unwrap_or_default(),
        push_name: s.push_name.clone().unwrap_or_default(),
        last_connected_at_ms: s.last_connected_at.unwrap_or(0),
        node: s.node.clone().unwrap_or_default(),
    }
}

pub fn from_proto(p: pb::Snapshot) -> Snapshot {
    let some = |s: String| Some(s).filter(|s| !s.is_empty());
    Snapshot {
        state: SessionState::parse(&p.state),
        reason: some(p.reason),
        qr: some(p.qr_code).map(|c| (c, p.qr_expires_at_ms)),
        pairing_code: some(p.pairing_code).map(|c| (c, p.pairing_code_expires_at_ms)),
        phone: some(p.phone),
        push_name: some(p.push_name),
        last_connected_at: (p.last_connected_at_ms > 0).then_some(p.last_connected_at_ms),
        node: some(p.node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_token_is_bound_to_its_method_time_and_key() {
        let key = NodeKey::from_master(&MasterKey::generate());
        let path = "/wagate.internal.v1.NodeService/GetSnapshot";
        let now = 1_700_000_000_000;
        let t = key.token("node-a", path, now);
        assert_eq!(key.verify(&t, path, now + 1_000), Some("node-a"));
        assert_eq!(
            key.verify(&t, "/wagate.internal.v1.NodeService/LogoutSession", now),
            None
        );
        assert_eq!(
            key.verify(&t, path, now + 31_000),
            None,
            "outside the window"
        );
        let other = NodeKey::from_master(&MasterKey::generate());
        assert_eq!(other.verify(&t, path, now), None, "another cluster's key");
        let forged = t.replacen("node-a", "node-b", 1);
        assert_eq!(key.verify(&forged, path, now), None);
    }

    #[test]
    fn a_snapshot_survives_the_wire() {
        let s = Snapshot {
            state: SessionState::Qr,
            reason: Some("why".into()),
            qr: Some(("2@abc".into(), 123)),
            pairing_code: None,
            phone: Some("6281".into()),
            push_name: None,
            last_connected_at: Some(9),
            node: Some("node-b".into()),
        };
        assert_eq!(from_proto(to_proto(&s)), s);
    }
}
