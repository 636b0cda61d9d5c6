//! The simulated service: what the server does with each client stanza.
//!
//! Everything runs under one `std::sync::Mutex<State>` held only for short,
//! non-async sections; replies go out through each connection's bounded channel.
//!
//! This file owns the [`Sim`] itself, the connection lifecycle, the dispatch of
//! inbound stanzas and the helpers every area sends with. Each protocol area
//! is a submodule adding its part of `impl Sim`:
//!
//! - [`login`]: the handshake's outcome — version gate, held logins, login.
//! - [`pairing`]: linking by QR, the signed device identity, `<pair-device-sign>`.
//! - [`pair_code`]: linking by phone-number code.
//! - [`iq`]: the IQ dispatch table and the IQs with fixed answers.
//! - [`prekeys`]: Signal prekey upload, count, digest and bundle fetch.
//! - [`usync`]: usync queries (device lists, contacts, LIDs).
//! - [`devices`]: device-list changes and companion removal.
//! - [`delivery`]: offline queues, in-flight stanzas and the offline replay.
//! - [`messages`]: 1:1 message relay, server acks and receipts.
//! - [`groups`]: `w:g2` groups and group fan-out.
//! - [`app_state`]: app-state sync and the phone's app-state key share.
//! - [`faults`]: faults the admin API injects (kick, logout, ban, held logins, min version).

mod app_state;
mod delivery;
mod devices;
mod faults;
mod groups;
mod iq;
mod login;
mod messages;
mod pair_code;
mod pairing;
mod prekeys;
mod usync;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Node, NodeContent};

use crate::conns::{Activity, ConnRecord, EndReason, Overlap};
use crate::state::{Conn, Device, Outbound, State};

pub const SERVER: &str = "s.whatsapp.net";

pub struct Sim {
    pub server_static: KeyPair,
    pub cert_chain: Vec<u8>,
    pub state: Mutex<State>,
    shutdown: watch::Sender<bool>,
    /// Close a connection whose client sent no frame for this long (off when `None`).
    idle_timeout: watch::Sender<Option<Duration>>,
    /// `host:port` the media host names point at.
    pub media_host: Mutex<String>,
}

impl Sim {
    pub fn new() -> Arc<Self> {
        let server_static = KeyPair::generate(&mut rand::rng());
        let pub32: [u8; 32] = server_static
            .public_key
            .public_key_bytes()
            .try_into()
            .expect("X25519 public key is 32 bytes");
        let cert_chain = wacore_noise::test_util::build_cert_chain_bytes(&pub32);
        let (shutdown, _) = watch::channel(false);
        let (idle_timeout, _) = watch::channel(None);
        Arc::new(Self {
            server_static,
            cert_chain,
            state: Mutex::new(State {
                next_lid: 100_000_000_000_000,
                ..Default::default()
            }),
            shutdown,
            idle_timeout,
            media_host: Mutex::new(String::new()),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    // ---- connection lifecycle ----------------------------------------------

    /// Closes every connection whose client then sends no frame for `timeout`
    /// (`None`, the default, never does), as WhatsApp drops a client that
    /// misses its keepalives. Applies to open connections at once, counting
    /// from their last frame.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.idle_timeout
            .send_replace(timeout.filter(|t| !t.is_zero()));
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        *self.idle_timeout.borrow()
    }

    pub(crate) fn idle_timeout_rx(&self) -> watch::Receiver<Option<Duration>> {
        self.idle_timeout.subscribe()
    }

    /// The connection log, oldest first: every connection accepted after its
    /// handshake (the newest [`crate::conns::MAX_CONN_LOG`]), open or closed.
    /// `device` — a device JID (`PHONE:DEV@s.whatsapp.net`) or a phone
    /// number — keeps only the connections that logged in as that device (or
    /// as a device of that account).
    pub fn connections(&self, device: Option<&str>) -> Vec<ConnRecord> {
        self.lock().conn_log.snapshot(device)
    }

    /// The pairs of connections of one device that were in use at the same
    /// time, by [`crate::conns::overlaps`] over [`Sim::connections`].
    pub fn connection_overlaps(&self, device: Option<&str>) -> Vec<Overlap> {
        crate::conns::overlaps(&self.connections(device))
    }

    /// A connection finished its handshake: it gets an id and a log entry,
    /// and its task gets the activity counters it updates per frame.
    pub fn register_conn(&self, tx: mpsc::Sender<Outbound>) -> (u64, Arc<Activity>) {
        let mut st = self.lock();
        st.next_conn += 1;
        let id = st.next_conn;
        let activity = st.conn_log.open(id);
        st.conns.insert(
            id,
            Conn {
                tx,
                user: None,
                registering: None,
                refs: Vec::new(),
                passive_done: false,
            },
        );
        (id, activity)
    }

    /// The connection's socket is gone, for `reason`.
    pub fn unregister_conn(&self, conn: u64, reason: EndReason) {
        let mut st = self.lock();
        st.conn_log.closed(conn, reason);
        if let Some(c) = st.conns.remove(&conn)
            && let Some((phone, dev)) = c.user
        {
            Self::went_offline(&mut st, conn, &phone, dev);
        }
        Self::abandon_pairing(&mut st, conn);
    }

    // ---- inbound dispatch --------------------------------------------------

    pub fn handle_node(self: &Arc<Self>, conn: u64, node: Node) {
        tracing::debug!("<- conn {conn}: {}", wacore::xml::DisplayableNode(&node));
        match node.tag.as_ref() {
            "iq" => self.handle_iq(conn, &node),
            "message" => self.relay_message(conn, &node),
            "receipt" => self.relay_receipt(conn, &node),
            "ack" => {
                let mut a = node.attrs();
                let class = a.optional_string("class").unwrap_or_default().to_string();
                let id = a.optional_string("id").unwrap_or_default().to_string();
                drop(a);
                Self::settle(&mut self.lock(), conn, &class, &id);
            }
            "chatstate" => self.record_chatstate(conn, &node),
            // Presence is not modelled (the client's own `available` at login included).
            "presence" => {}
            other => tracing::debug!("conn {conn}: ignoring <{other}>"),
        }
    }

    /// Records a logged-in device's chat state (`<chatstate to=J><composing/></chatstate>`).
    /// It is not relayed: tests read what was sent from the admin API.
    fn record_chatstate(&self, conn: u64, node: &Node) {
        let mut st = self.lock();
        let Some((phone, device)) = st.conns.get(&conn).and_then(|c| c.user.clone()) else {
            return;
        };
        let to = node
            .attrs()
            .optional_string("to")
            .map(|t| t.to_string())
            .unwrap_or_default();
        let Some(child) = node.children().and_then(|c| c.first()) else {
            return;
        };
        let media = child
            .attrs()
            .optional_string("media")
            .map(|m| m.to_string());
        let rec = crate::state::ChatstateRecord {
            from: phone,
            device,
            to,
            state: child.tag.to_string(),
            media,
            at_ms: crate::state::now_millis(),
        };
        st.push_chatstate(rec);
    }

    fn device_of(st: &State, conn: u64) -> Option<&Device> {
        let (phone, dev) = st.conns.get(&conn)?.user.as_ref()?;
        st.accounts.get(phone)?.devices.get(dev)
    }

    fn device_of_mut(st: &mut State, conn: u64) -> Option<&mut Device> {
        let (phone, dev) = st.conns.get(&conn)?.user.clone()?;
        st.accounts.get_mut(&phone)?.devices.get_mut(&dev)
    }

    /// The push name device `phone:dev` registered with, empty if none.
    fn push_name(st: &State, phone: &str, dev: u16) -> String {
        st.accounts
            .get(phone)
            .and_then(|a| a.devices.get(&dev))
            .map(|d| d.keys.push_name.clone())
            .unwrap_or_default()
    }

    // ---- sending helpers ---------------------------------------------------

    fn send(st: &State, conn: u64, node: Node) {
        if let Some(c) = st.conns.get(&conn) {
            tracing::debug!("-> conn {conn}: {}", wacore::xml::DisplayableNode(&node));
            if c.tx.try_send(Outbound::Node(node)).is_err() {
                tracing::warn!("conn {conn}: outbound channel full or closed; closing");
                let _ = c.tx.try_send(Outbound::Close(None, EndReason::Overloaded));
            }
        }
    }

    /// Sends `node` (if any) to the connection, then closes it for `reason`.
    fn close(st: &State, conn: u64, node: Option<Node>, reason: EndReason) {
        if let Some(c) = st.conns.get(&conn) {
            let tx = c.tx.clone();
            // A full channel must not lose the close: hand it to a task.
            if let Err(mpsc::error::TrySendError::Full(msg)) =
                tx.try_send(Outbound::Close(node, reason))
            {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(msg)).await;
                });
            }
        }
    }

    fn result(id: &str) -> NodeBuilder {
        NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "result")
            .attr("id", id.to_string())
    }

    fn error(id: &str, code: u16, text: &str) -> Node {
        NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "error")
            .attr("id", id.to_string())
            .children([NodeBuilder::new("error")
                .attr("code", code)
                .attr("text", text.to_string())
                .build()])
            .build()
    }
}

fn be_u32(b: &[u8]) -> u32 {
    b.iter().take(4).fold(0u32, |acc, x| (acc << 8) | *x as u32)
}

fn child_bytes(n: &Node, tag: &str) -> Option<Vec<u8>> {
    match &n.get_optional_child(tag)?.content {
        Some(NodeContent::Bytes(b)) => Some(b.clone()),
        _ => None,
    }
}
