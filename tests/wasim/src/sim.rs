//! The simulated service: what the server does with each client stanza.
//!
//! Everything runs under one `std::sync::Mutex<State>` held only for short,
//! non-async sections; replies go out through each connection's bounded channel.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use hmac::{KeyInit, Mac};
use tokio::sync::{mpsc, watch};
use wacore::libsignal::protocol::{KeyPair, PublicKey};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent, Server};
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;

use crate::state::*;

pub const SERVER: &str = "s.whatsapp.net";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub struct Sim {
    pub server_static: KeyPair,
    pub cert_chain: Vec<u8>,
    pub state: Mutex<State>,
    shutdown: watch::Sender<bool>,
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
        Arc::new(Self {
            server_static,
            cert_chain,
            state: Mutex::new(State {
                next_lid: 100_000_000_000_000,
                ..Default::default()
            }),
            shutdown,
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

    pub fn register_conn(&self, tx: mpsc::Sender<Outbound>) -> u64 {
        let mut st = self.lock();
        st.next_conn += 1;
        let id = st.next_conn;
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
        id
    }

    pub fn unregister_conn(&self, conn: u64) {
        let mut st = self.lock();
        if let Some(c) = st.conns.remove(&conn)
            && let Some((phone, dev)) = c.user
            && let Some(d) = st
                .accounts
                .get_mut(&phone)
                .and_then(|a| a.devices.get_mut(&dev))
            && d.conn == Some(conn)
        {
            d.conn = None;
            d.last_seen = Some(now_secs());
            // Unacknowledged stanzas go back to the head of the queue, in order.
            let requeued: Vec<Node> = d.inflight.drain(..).map(|(_, _, n)| n).collect();
            for n in requeued.iter().rev() {
                d.queue.push_front(n.clone());
            }
            while d.queue.len() > MAX_QUEUE {
                d.queue.pop_front();
                d.dropped += 1;
            }
            for n in &requeued {
                if let Some(r) = Self::record_for(&mut st, n) {
                    r.queued += 1;
                }
            }
        }
        st.pair_codes.retain(|p| p.conn != conn);
        // A connection that dies mid-pairing never signs: forget the half-linked device.
        let orphaned: Vec<(String, u16)> = st
            .pair_sign
            .values()
            .filter(|(_, _, c)| *c == conn)
            .map(|(p, d, _)| (p.clone(), *d))
            .collect();
        st.pair_sign.retain(|_, (_, _, c)| *c != conn);
        for (phone, dev) in orphaned {
            if let Some(a) = st.accounts.get_mut(&phone) {
                a.devices.remove(&dev);
            }
        }
    }

    // ---- sending helpers -------------------------------------------------

    fn send(st: &State, conn: u64, node: Node) {
        if let Some(c) = st.conns.get(&conn) {
            tracing::debug!("-> conn {conn}: {}", wacore::xml::DisplayableNode(&node));
            if c.tx.try_send(Outbound::Node(node)).is_err() {
                tracing::warn!("conn {conn}: outbound channel full or closed; closing");
                let _ = c.tx.try_send(Outbound::Close(None));
            }
        }
    }

    fn close(st: &State, conn: u64, node: Option<Node>) {
        if let Some(c) = st.conns.get(&conn) {
            let tx = c.tx.clone();
            // A full channel must not lose the close: hand it to a task.
            if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(Outbound::Close(node)) {
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

    // ---- handshake outcome -----------------------------------------------

    pub fn on_client_payload(&self, conn: u64, client_static: &[u8; 32], p: &wa::ClientPayload) {
        {
            let mut st = self.lock();
            if let Some(min) = st.min_version {
                let v = p.user_agent.app_version.as_option();
                let part = |f: fn(&wa::client_payload::user_agent::AppVersion) -> Option<u32>| {
                    v.and_then(f).unwrap_or(0)
                };
                let version = (
                    part(|v| v.primary),
                    part(|v| v.secondary),
                    part(|v| v.tertiary),
                );
                if version < min {
                    tracing::info!("conn {conn}: client version {version:?} is outdated");
                    let node = NodeBuilder::new("failure").attr("reason", 405u32).build();
                    Self::close(&st, conn, Some(node));
                    return;
                }
            }
            if p.device_pairing_data.as_option().is_none()
                && let Some(held) = st.held_logins.as_mut()
            {
                held.push(HeldLogin {
                    conn,
                    client_static: *client_static,
                    payload: p.clone(),
                });
                return;
            }
        }
        if let Some(reg) = p.device_pairing_data.as_option() {
            self.begin_registration(conn, client_static, p, reg);
        } else {
            self.login(conn, client_static, p);
        }
    }

    fn begin_registration(
        &self,
        conn: u64,
        client_static: &[u8; 32],
        p: &wa::ClientPayload,
        reg: &wa::client_payload::DevicePairingRegistrationData,
    ) {
        let keys = match parse_reg(client_static, p, reg) {
            Some(k) => k,
            None => {
                tracing::warn!("conn {conn}: malformed registration payload");
                let st = self.lock();
                Self::close(&st, conn, None);
                return;
            }
        };
        let mut st = self.lock();
        let refs: Vec<String> = (0..6)
            .map(|_| {
                let r: [u8; 18] = rand::random();
                format!("2@{}", BASE64_STANDARD.encode(r))
            })
            .collect();
        let iq_id = st.fresh_id();
        if let Some(c) = st.conns.get_mut(&conn) {
            c.registering = Some(keys);
            c.refs = refs.clone();
        }
        let node = NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "set")
            .attr("id", iq_id)
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children(
                    refs.into_iter()
                        .map(|r| NodeBuilder::new("ref").bytes(r.into_bytes()).build()),
                )
                .build()])
            .build();
        Self::send(&st, conn, node);
    }

    fn login(&self, conn: u64, client_static: &[u8; 32], p: &wa::ClientPayload) {
        let phone = p.username.map(|u| u.to_string()).unwrap_or_default();
        let dev = p.device.unwrap_or(0) as u16;
        let mut st = self.lock();
        let failure = |reason: u32| NodeBuilder::new("failure").attr("reason", reason).build();
        let Some(acc) = st.accounts.get_mut(&phone) else {
            tracing::info!("login for unknown account {phone}:{dev}");
            Self::close(&st, conn, Some(failure(401)));
            return;
        };
        if let Some(until) = acc.banned_until {
            let now = Instant::now();
            if until > now {
                let left = (until - now).as_secs().max(1);
                let node = NodeBuilder::new("failure")
                    .attr("reason", 402u32)
                    .attr("code", 101u32)
                    .attr("expire", left)
                    .build();
                Self::close(&st, conn, Some(node));
                return;
            }
            acc.banned_until = None;
        }
        let lid = acc.lid.clone();
        let Some(device) = acc.devices.get_mut(&dev) else {
            tracing::info!("login for removed device {phone}:{dev}");
            Self::close(&st, conn, Some(failure(401)));
            return;
        };
        if &device.keys.noise_pub != client_static {
            tracing::warn!("login for {phone}:{dev} with a foreign noise key");
            Self::close(&st, conn, Some(failure(401)));
            return;
        }
        let old = device.conn.replace(conn);
        device.last_seen = Some(now_secs());
        if let Some(old) = old.filter(|o| *o != conn) {
            // The newer connection wins, as on the real service.
            Self::close(&st, old, None);
        }
        if let Some(c) = st.conns.get_mut(&conn) {
            c.user = Some((phone.clone(), dev));
        }
        let success = NodeBuilder::new("success")
            .attr("t", now_secs())
            .attr("props", "1")
            .attr("creation", now_secs())
            .attr("location", "sim")
            .attr("lid", Jid::lid_device(lid, dev))
            .attr("display_name", "")
            .build();
        Self::send(&st, conn, success);
    }

    // ---- inbound dispatch ------------------------------------------------

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
            "presence" | "chatstate" => {}
            other => tracing::debug!("conn {conn}: ignoring <{other}>"),
        }
    }

    fn handle_iq(self: &Arc<Self>, conn: u64, node: &Node) {
        let mut attrs = node.attrs();
        let id = attrs.optional_string("id").unwrap_or_default().to_string();
        let ty = attrs
            .optional_string("type")
            .unwrap_or_default()
            .to_string();
        let xmlns = attrs
            .optional_string("xmlns")
            .unwrap_or_default()
            .to_string();
        drop(attrs);

        if ty == "result" || ty == "error" {
            self.iq_response(conn, &id, node);
            return;
        }
        let first = node.children().and_then(|c| c.first());
        let first_tag = first.map(|c| c.tag.as_ref()).unwrap_or("");
        match (xmlns.as_str(), first_tag) {
            ("passive", "active") => self.go_active(conn, &id),
            ("encrypt", "list") | ("encrypt", "registration") | ("encrypt", "identity") => {
                self.store_prekeys(conn, &id, node)
            }
            ("encrypt", "key") => self.fetch_prekeys(conn, &id, node),
            ("encrypt", "count") => {
                let st = self.lock();
                let count = Self::device_of(&st, conn)
                    .map(|d| d.prekeys.len())
                    .unwrap_or(0);
                let n = Self::result(&id)
                    .children([NodeBuilder::new("count").attr("value", count).build()])
                    .build();
                Self::send(&st, conn, n);
            }
            (_, "props") => {
                let st = self.lock();
                let n = Self::result(&id)
                    .children([NodeBuilder::new("props")
                        .attr("protocol", "2")
                        .attr("hash", "wasim")
                        .build()])
                    .build();
                Self::send(&st, conn, n);
            }
            ("privacy", _) => {
                let st = self.lock();
                let n = Self::result(&id)
                    .children([NodeBuilder::new("privacy").build()])
                    .build();
                Self::send(&st, conn, n);
            }
            ("encrypt", "digest") => {
                let st = self.lock();
                let n = match Self::device_of(&st, conn) {
                    Some(d) => Self::result(&id).children([digest_node(d)]).build(),
                    // Nothing stored: the client re-uploads its keys.
                    None => Self::error(&id, 404, "item-not-found"),
                };
                Self::send(&st, conn, n);
            }
            ("usync", _) => self.usync(conn, &id, node),
            ("w:g2", "create") => self.create_group(conn, &id, node),
            ("w:g2", "query") => self.query_group(conn, &id, node),
            ("w:g2", "participating") => {
                let st = self.lock();
                let me = st.conns.get(&conn).and_then(|c| c.user.clone());
                let groups = st
                    .groups
                    .values()
                    .filter(|g| me.as_ref().is_some_and(|(p, _)| g.members.contains(p)))
                    .map(|g| Self::group_node(&st, g));
                let n = Self::result(&id)
                    .children([NodeBuilder::new("groups").children(groups).build()])
                    .build();
                Self::send(&st, conn, n);
            }
            ("w:m", "media_conn") => self.media_conn(conn, &id),
            ("w:sync:app:state", _) => self.app_state(conn, &id, node),
            ("md", "remove-companion-device") => self.remove_companion(conn, &id, node),
            ("md", "link_code_companion_reg") => self.pair_code_request(conn, &id, node),
            _ => {
                let st = self.lock();
                Self::send(&st, conn, Self::result(&id).build());
            }
        }
    }

    fn device_of(st: &State, conn: u64) -> Option<&Device> {
        let (phone, dev) = st.conns.get(&conn)?.user.as_ref()?;
        st.accounts.get(phone)?.devices.get(dev)
    }

    fn device_of_mut(st: &mut State, conn: u64) -> Option<&mut Device> {
        let (phone, dev) = st.conns.get(&conn)?.user.clone()?;
        st.accounts.get_mut(&phone)?.devices.get_mut(&dev)
    }

    /// Responses the client sends to server IQs (pairing acks, pair-device-sign).
    fn iq_response(&self, conn: u64, id: &str, node: &Node) {
        let mut st = self.lock();
        let Some((phone, dev, _)) = st.pair_sign.remove(id) else {
            return;
        };
        let signed = node
            .get_optional_child_by_tag(&["pair-device-sign", "device-identity"])
            .and_then(|n| match &n.content {
                Some(NodeContent::Bytes(b)) => Some(b.clone()),
                _ => None,
            });
        match signed {
            Some(bytes) => {
                if let Some(d) = st
                    .accounts
                    .get_mut(&phone)
                    .and_then(|a| a.devices.get_mut(&dev))
                {
                    d.signed_identity = Some(bytes);
                }
                self.notify_devices(&mut st, &phone, dev, "add");
                tracing::info!("paired {phone}:{dev}; asking the client to reconnect");
                // 515: the client reconnects at once and logs in.
                let err = NodeBuilder::new("stream:error").attr("code", "515").build();
                Self::close(&st, conn, Some(err));
            }
            None => {
                tracing::warn!("pairing of {phone}:{dev} refused by the client");
                if let Some(a) = st.accounts.get_mut(&phone) {
                    a.devices.remove(&dev);
                }
            }
        }
    }

    /// Tells the account's other devices, and the devices of every account it
    /// has exchanged messages with, that device `dev` was added or removed
    /// (`op`), as the real service does; clients otherwise keep a stale
    /// device list and never encrypt for the new device.
    fn notify_devices(&self, st: &mut State, phone: &str, dev: u16, op: &'static str) {
        let Some(acc) = st.accounts.get_mut(phone) else {
            return;
        };
        acc.devices_ts = now_secs().max(acc.devices_ts + 1);
        let kil = key_index_list(acc);
        let key_index = acc.devices.get(&dev).map(|d| d.key_index);
        let ts = acc.devices_ts;
        let prefix = format!("{phone}:");
        let mut peers: Vec<String> = vec![phone.to_string()];
        for m in st.messages.iter() {
            let other = if m.from.starts_with(&prefix) {
                &m.to
            } else if m.to.starts_with(phone) {
                &m.from
            } else {
                continue;
            };
            let user = other.split(['@', ':']).next().unwrap_or("").to_string();
            if !peers.contains(&user) {
                peers.push(user);
            }
        }
        let mut device =
            NodeBuilder::new("device").attr("jid", Jid::pn_device(phone.to_string(), dev));
        if let Some(ki) = key_index {
            device = device.attr("key-index", ki);
        }
        let device = device.build();
        for peer in peers {
            let targets: Vec<u16> = st
                .accounts
                .get(&peer)
                .map(|a| {
                    a.devices
                        .keys()
                        .copied()
                        .filter(|d| !(peer == phone && *d == dev))
                        .collect()
                })
                .unwrap_or_default();
            for t in targets {
                let id = st.fresh_id();
                let node = NodeBuilder::new("notification")
                    .attr("from", Jid::pn(phone.to_string()))
                    .attr("id", id)
                    .attr("type", "devices")
                    .attr("t", now_secs())
                    .children([NodeBuilder::new(op)
                        .children([
                            device.clone(),
                            NodeBuilder::new("key-index-list")
                                .attr("ts", ts)
                                .bytes(kil.clone())
                                .build(),
                        ])
                        .build()])
                    .build();
                self.deliver(st, &peer, t, node);
            }
        }
    }

    fn go_active(self: &Arc<Self>, conn: u64, id: &str) {
        let mut st = self.lock();
        Self::send(&st, conn, Self::result(id).build());
        let queued: Vec<Node> = match Self::device_of_mut(&mut st, conn) {
            Some(d) => d.queue.drain(..).collect(),
            None => Vec::new(),
        };
        let count = queued.len();
        let me = st.conns.get(&conn).and_then(|c| c.user.clone());
        // The offline backlog: announced, replayed with the `offline`
        // attribute, then closed by `<offline count>` below.
        let preview = NodeBuilder::new("ib")
            .children([NodeBuilder::new("offline_preview")
                .attr("count", count)
                .build()])
            .build();
        Self::send(&st, conn, preview);
        for mut n in queued {
            if !n.attrs.contains_key("offline") {
                n.attrs.insert("offline", "1");
            }
            if let Some((phone, dev)) = &me {
                Self::write_to_device(&mut st, conn, phone, *dev, n);
            }
        }
        if let Some(c) = st.conns.get_mut(&conn) {
            c.passive_done = true;
        }
        let ib = NodeBuilder::new("ib")
            .children([NodeBuilder::new("offline").attr("count", count).build()])
            .build();
        Self::send(&st, conn, ib);
        if let Some((phone, dev)) = me {
            self.share_app_state_key(&mut st, phone, dev);
        }
    }

    /// First login after pairing: the phone sends the device its app-state
    /// key (the client otherwise waits 10 s for it before `Connected`).
    fn share_app_state_key(self: &Arc<Self>, st: &mut State, phone: String, dev: u16) {
        let Some(acc) = st.accounts.get_mut(&phone) else {
            return;
        };
        let (phone_key, reg_id, raw_id) = (acc.phone_key.clone(), acc.phone_reg_id, acc.raw_id);
        let app_key = acc.app_state_key.clone();
        let Some(d) = acc.devices.get_mut(&dev) else {
            return;
        };
        if d.key_shared {
            return;
        }
        d.key_shared = true;
        let keys = d.keys.clone();
        let sim = self.clone();
        tokio::spawn(async move {
            match crate::phone::app_state_key_share(&phone_key, reg_id, raw_id, dev, &keys, app_key)
                .await
            {
                Ok((ty, ct)) => {
                    let mut st = sim.lock();
                    let id = st.fresh_id();
                    let node = NodeBuilder::new("message")
                        .attr("from", Jid::pn(phone.clone()))
                        .attr("id", id)
                        .attr("type", "text")
                        .attr("category", "peer")
                        .attr("t", now_secs())
                        .children([NodeBuilder::new("enc")
                            .attr("v", "2")
                            .attr("type", ty)
                            .bytes(ct)
                            .build()])
                        .build();
                    sim.deliver(&mut st, &phone, dev, node);
                }
                Err(e) => tracing::warn!("phone key share for {phone}:{dev} failed: {e:#}"),
            }
        });
    }

    fn store_prekeys(&self, conn: u64, id: &str, node: &Node) {
        let mut st = self.lock();
        let mut fresh = Vec::new();
        if let Some(list) = node.get_optional_child("list") {
            for k in list.get_children_by_tag("key") {
                if let (Some(kid), Some(val)) = (child_bytes(k, "id"), child_bytes(k, "value"))
                    && let Ok(v) = <[u8; 32]>::try_from(val.as_slice())
                {
                    fresh.push((be_u32(&kid), v));
                }
            }
        }
        let skey = node.get_optional_child("skey").and_then(|s| {
            Some(SignedPreKey {
                id: be_u32(&child_bytes(s, "id")?),
                public: child_bytes(s, "value")?.try_into().ok()?,
                signature: child_bytes(s, "signature")?,
            })
        });
        if let Some(d) = Self::device_of_mut(&mut st, conn) {
            for k in fresh {
                if d.prekeys.len() < 2000 {
                    d.prekeys.push_back(k);
                }
            }
            if let Some(s) = skey {
                d.keys.signed_pre_key = s;
            }
        }
        Self::send(&st, conn, Self::result(id).build());
    }

    fn fetch_prekeys(&self, conn: u64, id: &str, node: &Node) {
        let mut st = self.lock();
        let mut users = Vec::new();
        let requested: Vec<Jid> = node
            .get_optional_child("key")
            .map(|k| {
                k.get_children_by_tag("user")
                    .filter_map(|u| u.attrs().optional_jid("jid"))
                    .collect()
            })
            .unwrap_or_default();
        for jid in requested {
            let phone = st.phone_of(&jid.user, jid.server == Server::Lid);
            if jid.device == 0
                && let Some(a) = phone.as_ref().and_then(|p| st.accounts.get(p))
            {
                users.push(phone_bundle(a, &jid));
                continue;
            }
            let dev = phone.as_ref().and_then(|p| {
                st.accounts
                    .get_mut(p)
                    .and_then(|a| a.devices.get_mut(&jid.device))
            });
            let user = match dev {
                Some(d) => {
                    let mut children = vec![
                        NodeBuilder::new("registration")
                            .bytes(d.keys.registration_id.to_be_bytes().to_vec())
                            .build(),
                        NodeBuilder::new("type").bytes(vec![5u8]).build(),
                        NodeBuilder::new("identity")
                            .bytes(d.keys.identity_pub.to_vec())
                            .build(),
                    ];
                    if let Some((kid, kval)) = d.prekeys.pop_front() {
                        children.push(
                            NodeBuilder::new("key")
                                .children([
                                    NodeBuilder::new("id")
                                        .bytes(kid.to_be_bytes()[1..].to_vec())
                                        .build(),
                                    NodeBuilder::new("value").bytes(kval.to_vec()).build(),
                                ])
                                .build(),
                        );
                    }
                    let s = &d.keys.signed_pre_key;
                    children.push(
                        NodeBuilder::new("skey")
                            .children([
                                NodeBuilder::new("id")
                                    .bytes(s.id.to_be_bytes()[1..].to_vec())
                                    .build(),
                                NodeBuilder::new("value").bytes(s.public.to_vec()).build(),
                                NodeBuilder::new("signature")
                                    .bytes(s.signature.clone())
                                    .build(),
                            ])
                            .build(),
                    );
                    if let Some(si) = &d.signed_identity {
                        children.push(
                            NodeBuilder::new("device-identity")
                                .bytes(si.clone())
                                .build(),
                        );
                    }
                    NodeBuilder::new("user")
                        .attr("jid", jid.clone())
                        .children(children)
                        .build()
                }
                None => NodeBuilder::new("user")
                    .attr("jid", jid.clone())
                    .children([NodeBuilder::new("error")
                        .attr("code", "406")
                        .attr("text", "not-acceptable")
                        .build()])
                    .build(),
            };
            users.push(user);
        }
        let n = Self::result(id)
            .children([NodeBuilder::new("list").children(users).build()])
            .build();
        Self::send(&st, conn, n);
    }

    fn media_conn(&self, conn: u64, id: &str) {
        let host = self
            .media_host
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let st = self.lock();
        let n = Self::result(id)
            .children([NodeBuilder::new("media_conn")
                .attr("auth", "wasim-media-auth")
                .attr("ttl", 3600u32)
                .attr("auth_ttl", 3600u32)
                .attr("max_buckets", 12u32)
                .children([NodeBuilder::new("host")
                    .attr("hostname", host)
                    .attr("type", "primary")
                    .build()])
                .build()])
            .build();
        Self::send(&st, conn, n);
    }

    /// App-state sync. The phone has written one patch, the push name in
    /// `critical_block` (version 1); every other collection is empty.
    fn app_state(&self, conn: u64, id: &str, node: &Node) {
        let wanted: Vec<(String, u64)> = node
            .get_optional_child("sync")
            .map(|s| {
                s.get_children_by_tag("collection")
                    .filter_map(|c| {
                        let mut a = c.attrs();
                        let name = a.optional_string("name")?.to_string();
                        let version = a
                            .optional_string("version")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        Some((name, version))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let st = self.lock();
        let account = st
            .conns
            .get(&conn)
            .and_then(|c| c.user.as_ref())
            .and_then(|(phone, _)| st.accounts.get(phone));
        let collections = wanted.into_iter().map(|(name, have)| {
            let patch = account
                .filter(|_| name == "critical_block")
                .map(|a| (a.push_name.as_str(), &a.app_state_key));
            match patch {
                Some((push_name, key)) if have < 1 => NodeBuilder::new("collection")
                    .attr("name", name)
                    .attr("version", "1")
                    .children([NodeBuilder::new("patches")
                        .children([NodeBuilder::new("patch")
                            .bytes(crate::phone::push_name_patch(push_name, key))
                            .build()])
                        .build()])
                    .build(),
                _ => NodeBuilder::new("collection")
                    .attr("name", name)
                    .attr("version", have.max(u64::from(patch.is_some())))
                    .build(),
            }
        });
        let n = Self::result(id)
            .children([NodeBuilder::new("sync").children(collections).build()])
            .build();
        Self::send(&st, conn, n);
    }

    fn remove_companion(&self, conn: u64, id: &str, node: &Node) {
        let mut st = self.lock();
        Self::send(&st, conn, Self::result(id).build());
        let target = node
            .get_optional_child("remove-companion-device")
            .and_then(|n| n.attrs().optional_jid("jid"));
        let me = st.conns.get(&conn).and_then(|c| c.user.clone());
        if let (Some(t), Some((phone, _))) = (target, me)
            && let Some(a) = st.accounts.get_mut(&phone)
            && let Some(d) = a.devices.remove(&t.device)
        {
            if let Some(c) = d.conn
                && c != conn
            {
                let err = NodeBuilder::new("stream:error").attr("code", "401").build();
                Self::close(&st, c, Some(err));
            }
            self.notify_devices(&mut st, &phone, t.device, "remove");
        }
    }

    // ---- groups ----------------------------------------------------------

    fn group_node(st: &State, g: &Group) -> Node {
        let participants = g.members.iter().map(|m| {
            let mut p = NodeBuilder::new("participant").attr("jid", Jid::pn(m.clone()));
            if m == &g.creator {
                p = p.attr("type", "superadmin");
            }
            if let Some(a) = st.accounts.get(m) {
                p = p.attr("lid", Jid::lid(a.lid.clone()));
            }
            p.build()
        });
        NodeBuilder::new("group")
            .attr("id", g.id.clone())
            .attr("subject", g.subject.clone())
            .attr("s_t", g.created)
            .attr("s_o", Jid::pn(g.creator.clone()))
            .attr("creation", g.created)
            .attr("creator", Jid::pn(g.creator.clone()))
            .attr("addressing_mode", "pn")
            .attr("size", g.members.len())
            .children(participants)
            .build()
    }

    /// `<create subject>` with `<participant jid>` children: a new group of
    /// the creator and the named accounts (unknown numbers are left out).
    fn create_group(&self, conn: u64, id: &str, node: &Node) {
        let mut st = self.lock();
        let Some((creator, _)) = st.conns.get(&conn).and_then(|c| c.user.clone()) else {
            return;
        };
        let Some(create) = node.get_optional_child("create") else {
            return;
        };
        let subject = create
            .attrs()
            .optional_string("subject")
            .unwrap_or_default()
            .to_string();
        let mut members = vec![creator.clone()];
        for p in create.get_children_by_tag("participant") {
            let Some(j) = p.attrs().optional_jid("jid") else {
                continue;
            };
            if let Some(phone) = st.phone_of(&j.user, j.server == Server::Lid)
                && !members.contains(&phone)
            {
                members.push(phone);
            }
        }
        st.next_group += 1;
        let gid = format!("1203630{:011}", st.next_group);
        let g = Group {
            id: gid.clone(),
            subject,
            creator,
            members,
            created: now_secs(),
        };
        let n = Self::result(id)
            .children([Self::group_node(&st, &g)])
            .build();
        st.groups.insert(gid, g);
        Self::send(&st, conn, n);
    }

    fn query_group(&self, conn: u64, id: &str, node: &Node) {
        let st = self.lock();
        let gid = node
            .attrs()
            .optional_jid("to")
            .map(|j| j.user.to_string())
            .unwrap_or_default();
        let n = match st.groups.get(&gid) {
            Some(g) => Self::result(id)
                .children([Self::group_node(&st, g)])
                .build(),
            None => Self::error(id, 404, "item-not-found"),
        };
        Self::send(&st, conn, n);
    }

    /// Group fan-out: every device of every member but the sender's own gets
    /// the group ciphertext (`skmsg`) plus, when the sender included one for
    /// it, its per-device `<enc>` (the sender-key distribution).
    fn relay_group_message(
        &self,
        st: &mut State,
        sender: (&str, u16),
        gid: &Jid,
        node: &Node,
        per_device: Vec<(Jid, Vec<Node>)>,
        common: Vec<Node>,
    ) -> Vec<String> {
        let (sphone, sdev) = sender;
        let Some(g) = st.groups.get(&gid.user.to_string()) else {
            return Vec::new();
        };
        let members = g.members.clone();
        let mut a = node.attrs();
        let id = a.optional_string("id").unwrap_or_default().to_string();
        let ty = a.optional_string("type").unwrap_or_default().to_string();
        drop(a);
        let push_name = st
            .accounts
            .get(sphone)
            .and_then(|a| a.devices.get(&sdev))
            .map(|d| d.keys.push_name.clone())
            .unwrap_or_default();
        let mut delivered_to = Vec::new();
        for member in members {
            let devices: Vec<u16> = st
                .accounts
                .get(&member)
                .map(|a| a.devices.keys().copied().collect())
                .unwrap_or_default();
            for dev in devices {
                if member == sphone && dev == sdev {
                    continue;
                }
                let mut children: Vec<Node> = per_device
                    .iter()
                    .filter(|(j, _)| {
                        j.device == dev
                            && st
                                .phone_of(&j.user, j.server == Server::Lid)
                                .is_some_and(|p| p == member)
                    })
                    .flat_map(|(_, encs)| encs.iter().cloned())
                    .collect();
                children.extend(common.iter().cloned());
                let mut b = NodeBuilder::new("message")
                    .attr("from", gid.clone())
                    .attr("participant", Jid::pn_device(sphone.to_string(), sdev))
                    .attr("id", id.clone())
                    .attr("type", ty.clone())
                    .attr("t", now_secs())
                    .attr("addressing_mode", "pn");
                if !push_name.is_empty() {
                    b = b.attr("notify", push_name.clone());
                }
                let msg = b.children(children).build();
                delivered_to.push(Jid::pn_device(member.clone(), dev).to_string());
                self.deliver(st, &member, dev, msg);
            }
        }
        delivered_to
    }

    // ---- usync -----------------------------------------------------------

    fn usync(&self, conn: u64, id: &str, node: &Node) {
        let st = self.lock();
        let Some(usync) = node.get_optional_child("usync") else {
            Self::send(&st, conn, Self::result(id).build());
            return;
        };
        let protocols: Vec<String> = usync
            .get_optional_child("query")
            .and_then(|q| q.children())
            .map(|c| c.iter().map(|n| n.tag.to_string()).collect())
            .unwrap_or_default();
        let mut users = Vec::new();
        if let Some(list) = usync.get_optional_child("list") {
            for u in list.get_children_by_tag("user") {
                let jid = u.attrs().optional_jid("jid").or_else(|| {
                    // <user><contact>+123</contact></user> queries by phone number.
                    u.get_optional_child("contact")
                        .and_then(|c| c.content_as_string())
                        .map(|s| Jid::pn(s.trim_start_matches('+').to_string()))
                });
                let Some(jid) = jid else { continue };
                let phone = st.phone_of(&jid.user, jid.server == Server::Lid);
                let acc = phone.as_ref().and_then(|p| st.accounts.get(p));
                let mut children = Vec::new();
                for p in &protocols {
                    match (p.as_str(), acc) {
                        ("devices", Some(a)) => {
                            let primary = NodeBuilder::new("device").attr("id", "0").build();
                            let devs =
                                std::iter::once(primary).chain(a.devices.values().map(|d| {
                                    NodeBuilder::new("device")
                                        .attr("id", d.id)
                                        .attr("key-index", d.key_index)
                                        .build()
                                }));
                            // The client ignores companion devices unless the list
                            // comes with a signed key-index list.
                            children.push(
                                NodeBuilder::new("devices")
                                    .children([
                                        NodeBuilder::new("device-list").children(devs).build(),
                                        NodeBuilder::new("key-index-list")
                                            .attr("ts", a.devices_ts)
                                            .bytes(key_index_list(a))
                                            .build(),
                                    ])
                                    .build(),
                            );
                        }
                        ("contact", Some(_)) => {
                            children.push(NodeBuilder::new("contact").attr("type", "in").build())
                        }
                        ("contact", None) => {
                            children.push(NodeBuilder::new("contact").attr("type", "out").build())
                        }
                        ("lid", Some(a)) => {
                            children.push(
                                NodeBuilder::new("lid")
                                    .attr("val", Jid::lid(a.lid.clone()))
                                    .build(),
                            );
                        }
                        _ => {}
                    }
                }
                let out_jid = match acc {
                    Some(a) if jid.server == Server::Lid => Jid::lid(a.lid.clone()),
                    Some(a) => Jid::pn(a.phone.clone()),
                    None => jid.to_non_ad(),
                };
                users.push(
                    NodeBuilder::new("user")
                        .attr("jid", out_jid)
                        .children(children)
                        .build(),
                );
            }
        }
        let mut usync_attrs = usync.attrs.clone();
        usync_attrs.insert("mode", "query");
        let n = Self::result(id)
            .children([Node::new(
                "usync",
                usync_attrs,
                Some(NodeContent::Nodes(vec![
                    NodeBuilder::new("result").build(),
                    NodeBuilder::new("list").children(users).build(),
                ])),
            )])
            .build();
        Self::send(&st, conn, n);
    }

    // ---- messages and receipts -------------------------------------------

    /// Address of `phone:dev` in the same JID family as `like`.
    fn addr(st: &State, phone: &str, dev: u16, like: Server) -> Jid {
        match (like, st.accounts.get(phone)) {
            (Server::Lid, Some(a)) => Jid::lid_device(a.lid.clone(), dev),
            _ => Jid::pn_device(phone.to_string(), dev),
        }
    }

    fn relay_message(self: &Arc<Self>, conn: u64, node: &Node) {
        let mut st = self.lock();
        let Some((sphone, sdev)) = st.conns.get(&conn).and_then(|c| c.user.clone()) else {
            return;
        };
        let mut a = node.attrs();
        let id = a.optional_string("id").unwrap_or_default().to_string();
        let ty = a.optional_string("type").unwrap_or_default().to_string();
        let to = a.optional_jid("to");
        drop(a);
        let Some(to) = to else { return };
        let ts = now_secs();
        let ack = NodeBuilder::new("ack")
            .attr("class", "message")
            .attr("id", id.clone())
            .attr("from", to.clone())
            .attr("t", ts)
            .build();

        // (recipient device jid, enc node)
        let mut targets: Vec<(Jid, Vec<Node>)> = Vec::new();
        if let Some(parts) = node.get_optional_child("participants") {
            for t in parts.get_children_by_tag("to") {
                if let Some(j) = t.attrs().optional_jid("jid") {
                    targets.push((j, t.children().map(|c| c.to_vec()).unwrap_or_default()));
                }
            }
        } else {
            let encs: Vec<Node> = node.get_children_by_tag("enc").cloned().collect();
            if !encs.is_empty() {
                targets.push((to.clone(), encs));
            }
        }
        let extra: Vec<Node> = node
            .children()
            .map(|c| {
                c.iter()
                    .filter(|n| n.tag == "device-identity")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let push_name = st
            .accounts
            .get(&sphone)
            .and_then(|a| a.devices.get(&sdev))
            .map(|d| d.keys.push_name.clone())
            .unwrap_or_default();

        let from_key = Self::addr(&st, &sphone, sdev, Server::Pn).to_string();
        let existing = st.record_mut(&from_key, &id).is_some();
        if !existing {
            st.push_record(MessageRecord {
                id: id.clone(),
                from: from_key.clone(),
                to: to.to_non_ad().to_string(),
                r#type: ty.clone(),
                recipients: Vec::new(),
                sent: BTreeMap::new(),
                delivered: BTreeMap::new(),
                read: BTreeMap::new(),
                queued: 0,
                times_relayed: 0,
                first_at_ms: now_millis(),
                last_at_ms: now_millis(),
            });
        }
        if let Some(r) = st.record_mut(&from_key, &id) {
            r.times_relayed += 1;
            r.last_at_ms = now_millis();
        }

        if to.server == Server::Group {
            let per_device: Vec<(Jid, Vec<Node>)> =
                if node.get_optional_child("participants").is_some() {
                    targets
                } else {
                    Vec::new()
                };
            let mut common: Vec<Node> = node.get_children_by_tag("enc").cloned().collect();
            common.extend(extra.iter().cloned());
            let to_devices =
                self.relay_group_message(&mut st, (&sphone, sdev), &to, node, per_device, common);
            if let Some(r) = st.record_mut(&from_key, &id) {
                for d in to_devices {
                    if !r.recipients.contains(&d) {
                        r.recipients.push(d);
                    }
                }
            }
            Self::send(&st, conn, ack);
            return;
        }

        for (target, encs) in targets {
            let Some(rphone) = st.phone_of(&target.user, target.server == Server::Lid) else {
                continue;
            };
            if target.device == 0 {
                // The simulated phone reads nothing; the copy ends here.
                continue;
            }
            let own = rphone == sphone;
            let from = Self::addr(&st, &sphone, sdev, target.server);
            let mut b = NodeBuilder::new("message")
                .attr("from", from)
                .attr("id", id.clone())
                .attr("type", ty.clone())
                .attr("t", ts);
            if own {
                b = b.attr("recipient", to.to_non_ad());
            } else if !push_name.is_empty() {
                b = b.attr("notify", push_name.clone());
            }
            let mut children = encs;
            children.extend(extra.iter().cloned());
            let msg = b.children(children).build();
            let tjid = Self::addr(&st, &rphone, target.device, Server::Pn).to_string();
            if let Some(r) = st.record_mut(&from_key, &id)
                && !r.recipients.contains(&tjid)
            {
                r.recipients.push(tjid.clone());
            }
            self.deliver(&mut st, &rphone, target.device, msg);
        }
        Self::send(&st, conn, ack);
    }

    /// Hands a stanza to a device: straight to its live connection once it is
    /// active, else onto its bounded offline queue.
    fn deliver(&self, st: &mut State, phone: &str, dev: u16, node: Node) {
        let live = st
            .accounts
            .get(phone)
            .and_then(|a| a.devices.get(&dev))
            .and_then(|d| d.conn)
            .filter(|c| st.conns.get(c).is_some_and(|c| c.passive_done));
        match live {
            Some(c) => Self::write_to_device(st, c, phone, dev, node),
            None => {
                if node.tag == "message"
                    && let Some(r) = Self::record_for(st, &node)
                {
                    r.queued += 1;
                }
                if let Some(d) = st
                    .accounts
                    .get_mut(phone)
                    .and_then(|a| a.devices.get_mut(&dev))
                {
                    if d.queue.len() >= MAX_QUEUE {
                        d.queue.pop_front();
                        d.dropped += 1;
                    }
                    d.queue.push_back(node);
                }
            }
        }
    }

    fn record_for<'a>(st: &'a mut State, node: &Node) -> Option<&'a mut MessageRecord> {
        let mut a = node.attrs();
        let id = a.optional_string("id")?.to_string();
        let from = a.optional_jid("from")?;
        let participant = a.optional_jid("participant");
        drop(a);
        // In a group the sender device is the `participant`.
        let from = match participant {
            Some(p) if from.server == Server::Group => p,
            _ => from,
        };
        let phone = st.phone_of(&from.user, from.server == Server::Lid)?;
        let key = Jid::pn_device(phone, from.device).to_string();
        st.record_mut(&key, &id)
    }

    /// Writes a stanza to the device's live connection and keeps it in flight
    /// until the device acknowledges it.
    fn write_to_device(st: &mut State, conn: u64, phone: &str, dev: u16, node: Node) {
        let to = Jid::pn_device(phone.to_string(), dev).to_string();
        if node.tag == "message"
            && let Some(r) = Self::record_for(st, &node)
        {
            *r.sent.entry(to).or_insert(0) += 1;
        }
        let class = node.tag.to_string();
        let id = node
            .attrs()
            .optional_string("id")
            .map(|s| s.to_string())
            .unwrap_or_default();
        if let Some(d) = st
            .accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&dev))
        {
            if d.inflight.len() >= MAX_QUEUE {
                d.inflight.pop_front();
                d.dropped += 1;
            }
            d.inflight.push_back((class, id, node.clone()));
        }
        Self::send(st, conn, node);
    }

    /// The device acknowledged stanza `id` of class `class`.
    fn settle(st: &mut State, conn: u64, class: &str, id: &str) {
        if let Some(d) = Self::device_of_mut(st, conn)
            && let Some(pos) = d
                .inflight
                .iter()
                .position(|(c, i, _)| c == class && i == id)
        {
            d.inflight.remove(pos);
        }
    }

    fn relay_receipt(self: &Arc<Self>, conn: u64, node: &Node) {
        let mut st = self.lock();
        let Some((sphone, sdev)) = st.conns.get(&conn).and_then(|c| c.user.clone()) else {
            return;
        };
        let mut a = node.attrs();
        let id = a.optional_string("id").unwrap_or_default().to_string();
        let ty = a.optional_string("type").map(|s| s.to_string());
        let to = a.optional_jid("to");
        let participant = a.optional_jid("participant");
        drop(a);
        let mut ack = NodeBuilder::new("ack")
            .attr("class", "receipt")
            .attr("id", id.clone());
        if let Some(t) = &ty {
            ack = ack.attr("type", t.clone());
        }
        if let Some(to) = &to {
            ack = ack.attr("from", to.clone());
        }
        Self::send(&st, conn, ack.build());

        // Receipts go back to the original sender: `participant` names the
        // sender device in groups; in 1:1 `to` names the sender.
        let group = to.clone().filter(|j| j.server == Server::Group);
        let Some(target) = participant.or(to) else {
            return;
        };
        let Some(tphone) = st.phone_of(&target.user, target.server == Server::Lid) else {
            return;
        };
        // Every id the receipt covers: its own and any `<list><item id>`.
        let mut ids = vec![id.clone()];
        if let Some(list) = node.get_optional_child("list") {
            ids.extend(
                list.get_children_by_tag("item")
                    .filter_map(|i| i.attrs().optional_string("id").map(|s| s.to_string())),
            );
        }
        let me = Jid::pn_device(sphone.clone(), sdev).to_string();
        let sender_key = Jid::pn_device(tphone.clone(), target.device).to_string();
        let is_read = matches!(
            ty.as_deref(),
            Some("read" | "read-self" | "played" | "played-self")
        );
        let is_delivery = matches!(ty.as_deref(), None | Some("" | "inactive"));
        for mid in &ids {
            Self::settle(&mut st, conn, "message", mid);
            // Read receipts name the chat, not the sender device: fall back to
            // the newest record with this id from any device of that user.
            let key = if st.record_mut(&sender_key, mid).is_some() {
                Some(sender_key.clone())
            } else {
                let prefix = format!("{tphone}:");
                st.messages
                    .iter()
                    .rev()
                    .find(|m| &m.id == mid && m.from.starts_with(&prefix))
                    .map(|m| m.from.clone())
            };
            if let Some(r) = key.and_then(|k| st.record_mut(&k, mid)) {
                if is_read {
                    *r.read.entry(me.clone()).or_insert(0) += 1;
                } else if is_delivery {
                    *r.delivered.entry(me.clone()).or_insert(0) += 1;
                }
            }
        }
        let from = Self::addr(&st, &sphone, sdev, target.server);
        let mut attrs = node.attrs.clone();
        attrs
            .0
            .retain(|(k, _)| k != "to" && k != "from" && k != "participant");
        match &group {
            // Group receipts come from the group, naming the reader device.
            Some(g) => {
                attrs.insert("from", g.clone());
                attrs.insert("participant", from);
            }
            None => attrs.insert("from", from.to_non_ad()),
        }
        attrs.insert("t", now_secs());
        let devices: Vec<u16> = st
            .accounts
            .get(&tphone)
            .map(|a| a.devices.keys().copied().collect())
            .unwrap_or_default();
        for dev in devices {
            if tphone == sphone && dev == sdev {
                continue;
            }
            let mut attrs = attrs.clone();
            if tphone == sphone {
                attrs.insert("recipient", target.to_non_ad());
            }
            let n = Node::new("receipt", attrs, node.content.clone());
            self.deliver(&mut st, &tphone, dev, n);
        }
    }

    // ---- pairing (admin side) --------------------------------------------

    fn account_mut<'a>(st: &'a mut State, phone: &str) -> &'a mut Account {
        if !st.accounts.contains_key(phone) {
            st.next_lid += 1;
            let lid = st.next_lid.to_string();
            st.lid_to_phone.insert(lid.clone(), phone.to_string());
            let phone_key = KeyPair::generate(&mut rand::rng());
            let phone_spk = KeyPair::generate(&mut rand::rng());
            let phone_spk_sig = phone_key
                .private_key
                .calculate_signature(&phone_spk.public_key.serialize(), &mut rand::rng())
                .map(|s| s.to_vec())
                .unwrap_or_default();
            st.accounts.insert(
                phone.to_string(),
                Account {
                    phone: phone.to_string(),
                    lid,
                    phone_key,
                    phone_reg_id: rand::random::<u32>() & 0x3fff,
                    raw_id: rand::random::<u32>(),
                    phone_spk,
                    phone_spk_sig,
                    devices: BTreeMap::new(),
                    next_device: 1,
                    next_key_index: 1,
                    banned_until: None,
                    created: now_secs(),
                    devices_ts: now_secs(),
                    push_name: format!("wasim {phone}"),
                    app_state_key: (rand::random::<[u8; 6]>().to_vec(), rand::random()),
                },
            );
        }
        st.accounts.get_mut(phone).expect("inserted above")
    }

    /// The simulated phone scans a QR code: links the waiting connection as a
    /// new companion device of `phone` and sends it `<pair-success>`.
    pub fn scan(&self, qr: &str, phone: &str) -> Result<String, String> {
        let fields: Vec<&str> = qr.split(',').collect();
        if fields.len() < 4 {
            return Err("QR must have at least 4 comma-separated fields".into());
        }
        let pairing_ref = fields[0];
        let identity_pub = decode32(fields[2]).ok_or("bad identity key in QR")?;
        let adv_secret = BASE64_STANDARD
            .decode(fields[3])
            .map_err(|_| "bad adv secret in QR")?;
        let mut st = self.lock();
        let conn = st
            .conns
            .iter()
            .find(|(_, c)| c.refs.iter().any(|r| r == pairing_ref))
            .map(|(id, _)| *id)
            .ok_or("no connection is showing this QR ref")?;
        let keys = st
            .conns
            .get(&conn)
            .and_then(|c| c.registering.clone())
            .ok_or("connection is not registering")?;
        if keys.identity_pub != identity_pub {
            return Err("QR identity key does not match the registering client".into());
        }
        self.complete_pairing(&mut st, conn, phone, keys, &adv_secret)
    }

    fn complete_pairing(
        &self,
        st: &mut State,
        conn: u64,
        phone: &str,
        keys: RegKeys,
        adv_secret: &[u8],
    ) -> Result<String, String> {
        if phone.is_empty() || !phone.bytes().all(|b| b.is_ascii_digit()) {
            return Err("phone must be digits".into());
        }
        let acc = Self::account_mut(st, phone);
        let dev = acc.next_device;
        acc.next_device += 1;
        let key_index = acc.next_key_index;
        acc.next_key_index += 1;
        let details = wa::ADVDeviceIdentity {
            raw_id: Some(acc.raw_id),
            timestamp: Some(now_secs()),
            key_index: Some(key_index),
            ..Default::default()
        }
        .encode_to_vec();
        let msg = [&[6u8, 0][..], &details, &keys.identity_pub].concat();
        let account_signature = acc
            .phone_key
            .private_key
            .calculate_signature(&msg, &mut rand::rng())
            .map_err(|e| format!("sign: {e}"))?;
        let signed = wa::ADVSignedDeviceIdentity {
            details: Some(details),
            account_signature_key: Some(acc.phone_key.public_key.public_key_bytes().to_vec()),
            account_signature: Some(account_signature.to_vec()),
            ..Default::default()
        }
        .encode_to_vec();
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(adv_secret).map_err(|e| e.to_string())?;
        mac.update(&signed);
        let container = wa::ADVSignedDeviceIdentityHMAC {
            details: Some(signed),
            hmac: Some(mac.finalize().into_bytes().to_vec()),
            ..Default::default()
        }
        .encode_to_vec();
        let lid = acc.lid.clone();
        acc.devices.insert(
            dev,
            Device {
                id: dev,
                keys,
                key_index,
                signed_identity: None,
                prekeys: VecDeque::new(),
                queue: VecDeque::new(),
                inflight: VecDeque::new(),
                dropped: 0,
                conn: None,
                last_seen: None,
                key_shared: false,
            },
        );
        let iq_id = st.fresh_id();
        st.pair_sign
            .insert(iq_id.clone(), (phone.to_string(), dev, conn));
        if let Some(c) = st.conns.get_mut(&conn) {
            c.refs.clear();
            c.registering = None;
        }
        let jid = Jid::pn_device(phone.to_string(), dev);
        let node = NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "set")
            .attr("id", iq_id)
            .attr("xmlns", "md")
            .attr("t", now_secs())
            .children([NodeBuilder::new("pair-success")
                .children([
                    NodeBuilder::new("device")
                        .attr("jid", jid.clone())
                        .attr("lid", Jid::lid_device(lid, dev))
                        .build(),
                    NodeBuilder::new("device-identity")
                        .attr("key-index", key_index)
                        .bytes(container)
                        .build(),
                    NodeBuilder::new("platform").attr("name", "android").build(),
                ])
                .build()])
            .build();
        Self::send(st, conn, node);
        Ok(jid.to_string())
    }

    // ---- pairing by phone-number code --------------------------------------

    /// `link_code_companion_reg` IQs: `companion_hello` registers the request
    /// and returns its ref; `companion_finish` carries the key bundle that
    /// completes pairing.
    fn pair_code_request(&self, conn: u64, id: &str, node: &Node) {
        let Some(reg) = node.get_optional_child("link_code_companion_reg") else {
            return;
        };
        let mut a = reg.attrs();
        let stage = a.optional_string("stage").unwrap_or_default().to_string();
        let phone = a.optional_jid("jid").map(|j| j.user.to_string());
        drop(a);
        let mut st = self.lock();
        match stage.as_str() {
            "companion_hello" => {
                let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub");
                let (Some(phone), Some(wrapped)) = (phone, wrapped) else {
                    Self::send(&st, conn, Self::error(id, 400, "bad-request"));
                    return;
                };
                if wrapped.len() != 80 {
                    Self::send(&st, conn, Self::error(id, 400, "bad-request"));
                    return;
                }
                let r: [u8; 12] = rand::random();
                let pairing_ref = format!("2@{}", BASE64_STANDARD.encode(r));
                // A new request from the same connection replaces the old one;
                // codes expire after the client's own validity window.
                let validity = wacore::pair_code::PairCodeUtils::code_validity();
                st.pair_codes
                    .retain(|p| p.conn != conn && p.created.elapsed() < validity);
                if st.pair_codes.len() >= 1000 {
                    st.pair_codes.remove(0);
                }
                st.pair_codes.push(PendingPairCode {
                    conn,
                    phone,
                    pairing_ref: pairing_ref.clone(),
                    wrapped_companion_ephemeral: wrapped,
                    primary: None,
                    created: Instant::now(),
                });
                let n = Self::result(id)
                    .children([NodeBuilder::new("link_code_companion_reg")
                        .children([NodeBuilder::new("link_code_pairing_ref")
                            .bytes(pairing_ref.into_bytes())
                            .build()])
                        .build()])
                    .build();
                Self::send(&st, conn, n);
            }
            "companion_finish" => {
                let result = self.finish_pair_code(&mut st, conn, reg);
                match result {
                    Ok((phone, keys, adv_secret)) => {
                        Self::send(&st, conn, Self::result(id).build());
                        if let Err(e) =
                            self.complete_pairing(&mut st, conn, &phone, keys, &adv_secret)
                        {
                            tracing::warn!("pair-code completion failed: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("companion_finish refused: {e}");
                        Self::send(&st, conn, Self::error(id, 400, "bad-request"));
                    }
                }
            }
            _ => Self::send(&st, conn, Self::error(id, 400, "bad-request")),
        }
    }

    /// The phone's side of `companion_finish`: unwraps the key bundle with the
    /// ephemeral agreement and derives the ADV secret the client derived.
    fn finish_pair_code(
        &self,
        st: &mut State,
        conn: u64,
        reg: &Node,
    ) -> Result<(String, RegKeys, Vec<u8>), String> {
        let pos = st
            .pair_codes
            .iter()
            .position(|p| p.conn == conn && p.primary.is_some())
            .ok_or("no entered pairing code for this connection")?;
        let pending = st.pair_codes.remove(pos);
        let (primary, companion_eph) = pending.primary.ok_or("no primary ephemeral")?;
        let wrapped =
            child_bytes(reg, "link_code_pairing_wrapped_key_bundle").ok_or("missing key bundle")?;
        let companion_identity: [u8; 32] = child_bytes(reg, "companion_identity_public")
            .and_then(|b| b.try_into().ok())
            .ok_or("missing companion identity")?;
        if wrapped.len() < 32 + 12 + 16 {
            return Err("key bundle too short".into());
        }
        let pk = |b: &[u8]| PublicKey::from_djb_public_key_bytes(b).map_err(|e| e.to_string());
        let eph_shared = primary
            .private_key
            .calculate_agreement(&pk(&companion_eph)?)
            .map_err(|e| e.to_string())?;
        let mut enc_key = [0u8; 32];
        wacore::crypto::hkdf_sha256_into(
            &eph_shared,
            Some(&wrapped[..32]),
            b"link_code_pairing_key_bundle_encryption_key",
            &mut enc_key,
        )
        .map_err(|_| "hkdf")?;
        let iv: [u8; 12] = wrapped[32..44].try_into().map_err(|_| "iv")?;
        let mut bundle = Vec::new();
        wacore::libsignal::crypto::aes_256_gcm_decrypt(
            &enc_key,
            &iv,
            b"",
            &wrapped[44..],
            &mut bundle,
        )
        .map_err(|_| "key bundle does not decrypt (wrong code?)")?;
        if bundle.len() != 96 || bundle[..32] != companion_identity {
            return Err("key bundle names another companion".into());
        }
        let acc = st.accounts.get(&pending.phone).ok_or("account vanished")?;
        if bundle[32..64] != *acc.phone_key.public_key.public_key_bytes() {
            return Err("key bundle names another phone".into());
        }
        let identity_shared = acc
            .phone_key
            .private_key
            .calculate_agreement(&pk(&companion_identity)?)
            .map_err(|e| e.to_string())?;
        let combined = [&eph_shared[..], &identity_shared[..], &bundle[64..96]].concat();
        let mut adv_secret = [0u8; 32];
        wacore::crypto::hkdf_sha256_into(&combined, None, b"adv_secret", &mut adv_secret)
            .map_err(|_| "hkdf")?;
        let keys = st
            .conns
            .get(&conn)
            .and_then(|c| c.registering.clone())
            .ok_or("connection is not registering")?;
        if keys.identity_pub != companion_identity {
            return Err("companion identity differs from its registration".into());
        }
        Ok((pending.phone, keys, adv_secret.to_vec()))
    }

    /// The simulated phone's user types `code` for account `phone`: the phone
    /// answers the waiting companion with `primary_hello`.
    pub fn enter_pair_code(&self, phone: &str, code: &str) -> Result<String, String> {
        use wacore::pair_code::PairCodeUtils;
        let code = code.trim().to_ascii_uppercase();
        if !PairCodeUtils::validate_code(&code) {
            return Err("code must be 8 Crockford base32 characters".into());
        }
        // The code's key derivation (PBKDF2) is slow by design: run it
        // outside the state lock.
        let (pairing_ref, wrapped) = {
            let st = self.lock();
            let p = st
                .pair_codes
                .iter()
                .rfind(|p| p.phone == phone && p.primary.is_none())
                .ok_or("no companion is waiting for a code for this phone")?;
            (p.pairing_ref.clone(), p.wrapped_companion_ephemeral.clone())
        };
        let companion_eph = PairCodeUtils::decrypt_primary_ephemeral_pub(&wrapped, &code)
            .map_err(|e| e.to_string())?;
        let primary = KeyPair::generate(&mut rand::rng());
        let primary_pub: [u8; 32] = primary
            .public_key
            .public_key_bytes()
            .try_into()
            .map_err(|_| "key length")?;
        let wrapped_primary = PairCodeUtils::encrypt_ephemeral_pub(&primary_pub, &code);
        let mut st = self.lock();
        let pos = st
            .pair_codes
            .iter()
            .position(|p| p.pairing_ref == pairing_ref && p.primary.is_none())
            .ok_or("the pairing request went away")?;
        let identity = Self::account_mut(&mut st, phone)
            .phone_key
            .public_key
            .public_key_bytes()
            .to_vec();
        let p = &mut st.pair_codes[pos];
        p.primary = Some((primary, companion_eph));
        let (conn, pairing_ref) = (p.conn, p.pairing_ref.clone());
        let id = st.fresh_id();
        let node = NodeBuilder::new("notification")
            .attr("from", SERVER)
            .attr("id", id)
            .attr("type", "link_code_companion_reg")
            .attr("t", now_secs())
            .children([NodeBuilder::new("link_code_companion_reg")
                .attr("stage", "primary_hello")
                .children([
                    NodeBuilder::new("link_code_pairing_ref")
                        .bytes(pairing_ref.into_bytes())
                        .build(),
                    NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                        .bytes(wrapped_primary.to_vec())
                        .build(),
                    NodeBuilder::new("primary_identity_pub")
                        .bytes(identity)
                        .build(),
                ])
                .build()])
            .build();
        Self::send(&st, conn, node);
        Ok(format!("{phone}@s.whatsapp.net"))
    }

    // ---- faults ------------------------------------------------------------

    pub fn kick(&self, phone: &str) -> Result<usize, String> {
        let st = self.lock();
        let acc = st.accounts.get(phone).ok_or("no such account")?;
        let conns: Vec<u64> = acc.devices.values().filter_map(|d| d.conn).collect();
        for c in &conns {
            Self::close(&st, *c, None);
        }
        Ok(conns.len())
    }

    pub fn logout(&self, phone: &str) -> Result<usize, String> {
        let mut st = self.lock();
        let acc = st.accounts.get_mut(phone).ok_or("no such account")?;
        let devices: Vec<Device> = std::mem::take(&mut acc.devices).into_values().collect();
        for d in &devices {
            if let Some(c) = d.conn {
                let err = NodeBuilder::new("stream:error").attr("code", "401").build();
                Self::close(&st, c, Some(err));
            }
        }
        for d in &devices {
            self.notify_devices(&mut st, phone, d.id, "remove");
        }
        Ok(devices.len())
    }

    /// Holds every login unanswered (`true`), or answers the held ones in order and
    /// stops holding (`false`): a service too slow to let sessions in, for a while.
    pub fn hold_logins(&self, hold: bool) {
        let held = {
            let mut st = self.lock();
            if hold {
                st.held_logins.get_or_insert_with(Vec::new);
                return;
            }
            st.held_logins.take().unwrap_or_default()
        };
        for h in held {
            if self.lock().conns.contains_key(&h.conn) {
                self.login(h.conn, &h.client_static, &h.payload);
            }
        }
    }

    /// Refuses clients older than `version` (`None` accepts every version), as
    /// WhatsApp refuses a client version it no longer supports.
    pub fn set_min_version(&self, version: Option<(u32, u32, u32)>) {
        self.lock().min_version = version;
    }

    pub fn ban(&self, phone: &str, secs: u64) -> Result<(), String> {
        let mut st = self.lock();
        let acc = st.accounts.get_mut(phone).ok_or("no such account")?;
        acc.banned_until = Some(Instant::now() + Duration::from_secs(secs));
        let conns: Vec<u64> = acc.devices.values().filter_map(|d| d.conn).collect();
        for c in conns {
            Self::close(&st, c, None);
        }
        Ok(())
    }
}

fn parse_reg(
    client_static: &[u8; 32],
    p: &wa::ClientPayload,
    reg: &wa::client_payload::DevicePairingRegistrationData,
) -> Option<RegKeys> {
    let identity_pub: [u8; 32] = reg.e_ident.as_deref()?.try_into().ok()?;
    PublicKey::from_djb_public_key_bytes(&identity_pub).ok()?;
    Some(RegKeys {
        noise_pub: *client_static,
        identity_pub,
        registration_id: be_u32(reg.e_regid.as_deref()?),
        signed_pre_key: SignedPreKey {
            id: be_u32(reg.e_skey_id.as_deref()?),
            public: reg.e_skey_val.as_deref()?.try_into().ok()?,
            signature: reg.e_skey_sig.clone()?,
        },
        push_name: p.push_name.clone().unwrap_or_default(),
    })
}

/// `ADVSignedKeyIndexList` naming the account's current device key indexes.
fn key_index_list(a: &Account) -> Vec<u8> {
    let valid: Vec<u32> = a.devices.values().map(|d| d.key_index).collect();
    let details = wa::ADVKeyIndexList {
        raw_id: Some(a.raw_id),
        timestamp: Some(a.devices_ts),
        current_index: Some(a.next_key_index.saturating_sub(1)),
        valid_indexes: valid,
        ..Default::default()
    }
    .encode_to_vec();
    let msg = [&[6u8, 2][..], &details].concat();
    let sig = a
        .phone_key
        .private_key
        .calculate_signature(&msg, &mut rand::rng())
        .map(|s| s.to_vec())
        .unwrap_or_default();
    wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(sig),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `<digest>` of a device's stored key bundle, which the client checks
/// against its own keys (re-uploading on mismatch).
fn digest_node(d: &Device) -> Node {
    let s = &d.keys.signed_pre_key;
    let pubs: Vec<&[u8]> = d.prekeys.iter().map(|(_, k)| &k[..]).collect();
    let hash = wacore::prekeys::compute_key_bundle_digest(
        &d.keys.identity_pub,
        &s.public,
        &s.signature,
        &pubs,
    );
    let id3 = |id: u32| id.to_be_bytes()[1..].to_vec();
    NodeBuilder::new("digest")
        .children([
            NodeBuilder::new("registration")
                .bytes(d.keys.registration_id.to_be_bytes().to_vec())
                .build(),
            NodeBuilder::new("type").bytes(vec![5u8]).build(),
            NodeBuilder::new("identity")
                .bytes(d.keys.identity_pub.to_vec())
                .build(),
            NodeBuilder::new("skey")
                .children([
                    NodeBuilder::new("id").bytes(id3(s.id)).build(),
                    NodeBuilder::new("value").bytes(s.public.to_vec()).build(),
                    NodeBuilder::new("signature")
                        .bytes(s.signature.clone())
                        .build(),
                ])
                .build(),
            NodeBuilder::new("list")
                .children(
                    d.prekeys
                        .iter()
                        .map(|(id, _)| NodeBuilder::new("id").bytes(id3(*id)).build()),
                )
                .build(),
            NodeBuilder::new("hash").bytes(hash).build(),
        ])
        .build()
}

/// Prekey bundle of the simulated phone (device 0): identity, signed prekey,
/// no one-time prekey (the Signal protocol allows bundles without one).
fn phone_bundle(a: &Account, jid: &Jid) -> Node {
    NodeBuilder::new("user")
        .attr("jid", jid.clone())
        .children([
            NodeBuilder::new("registration")
                .bytes(a.phone_reg_id.to_be_bytes().to_vec())
                .build(),
            NodeBuilder::new("type").bytes(vec![5u8]).build(),
            NodeBuilder::new("identity")
                .bytes(a.phone_key.public_key.public_key_bytes().to_vec())
                .build(),
            NodeBuilder::new("skey")
                .children([
                    NodeBuilder::new("id").bytes(vec![0u8, 0, 1]).build(),
                    NodeBuilder::new("value")
                        .bytes(a.phone_spk.public_key.public_key_bytes().to_vec())
                        .build(),
                    NodeBuilder::new("signature")
                        .bytes(a.phone_spk_sig.clone())
                        .build(),
                ])
                .build(),
        ])
        .build()
}

fn be_u32(b: &[u8]) -> u32 {
    b.iter().take(4).fold(0u32, |acc, x| (acc << 8) | *x as u32)
}

fn decode32(b64: &str) -> Option<[u8; 32]> {
    BASE64_STANDARD.decode(b64).ok()?.try_into().ok()
}

fn child_bytes(n: &Node, tag: &str) -> Option<Vec<u8>> {
    match &n.get_optional_child(tag)?.content {
        Some(NodeContent::Bytes(b)) => Some(b.clone()),
        _ => None,
    }
}
