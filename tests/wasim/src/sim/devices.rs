//! Device-list changes of a multi-device account: the
//! `<notification type="devices">` add/remove that goes to the account's other
//! devices and to its peers (so senders encrypt for a new device and stop
//! encrypting for a removed one), the signed key-index list naming the current
//! devices, and companion removal (`remove-companion-device`).

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;

use super::Sim;
use crate::conns::EndReason;
use crate::state::{Account, State, now_secs};

impl Sim {
    /// Tells the account's other devices, and the devices of every account it
    /// has exchanged messages with, that device `dev` was added or removed
    /// (`op`), as the real service does; clients otherwise keep a stale
    /// device list and never encrypt for the new device.
    pub(super) fn notify_devices(&self, st: &mut State, phone: &str, dev: u16, op: &'static str) {
        let Some(acc) = st.accounts.get_mut(phone) else {
            return;
        };
        acc.devices_ts = now_secs().max(acc.devices_ts + 1);
        let kil = key_index_list(acc);
        let key_index = acc.devices.get(&dev).map(|d| d.key_index);
        let ts = acc.devices_ts;
        let mut device =
            NodeBuilder::new("device").attr("jid", Jid::pn_device(phone.to_string(), dev));
        if let Some(ki) = key_index {
            device = device.attr("key-index", ki);
        }
        let device = device.build();
        for peer in peers_of(st, phone) {
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

    /// A device unlinks another device of its account: the removed device's
    /// connection gets stream error 401 and the others learn of the removal.
    pub(super) fn remove_companion(&self, conn: u64, id: &str, node: &Node) {
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
                Self::close(&st, c, Some(err), EndReason::LoggedOut);
            }
            self.notify_devices(&mut st, &phone, t.device, "remove");
        }
    }
}

/// The account itself, then every account it has exchanged messages with
/// (from the message log), each once.
fn peers_of(st: &State, phone: &str) -> Vec<String> {
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
    peers
}

/// `ADVSignedKeyIndexList` naming the account's current device key indexes.
pub(super) fn key_index_list(a: &Account) -> Vec<u8> {
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
