//! Message relay and receipts. A client's `<message>` is fanned out per
//! recipient device (`<participants><to>` or a single `<enc>`), with `from`
//! in the addressing family (PN or LID) the sender used, `notify` on copies to
//! others and `recipient` on copies to the sender's own devices; the server
//! answers `<ack class="message">` and logs the message for the admin API.
//! Group messages go on to [`super::groups`]. Receipts are acked, counted in
//! the log (delivered/read per device) and relayed to the sender's devices.

use std::collections::BTreeMap;
use std::sync::Arc;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

use super::Sim;
use crate::state::{MessageRecord, State, now_millis, now_secs};

/// Who a message stanza is for and what it carries.
struct Outgoing {
    id: String,
    ty: String,
    to: Jid,
    ts: u64,
    /// The sender's `<device-identity>`, forwarded with every copy.
    extra: Vec<Node>,
}

impl Sim {
    /// Address of `phone:dev` in the same JID family as `like`.
    fn addr(st: &State, phone: &str, dev: u16, like: Server) -> Jid {
        match (like, st.accounts.get(phone)) {
            (Server::Lid, Some(a)) => Jid::lid_device(a.lid.clone(), dev),
            _ => Jid::pn_device(phone.to_string(), dev),
        }
    }

    pub(super) fn relay_message(self: &Arc<Self>, conn: u64, node: &Node) {
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
        let msg = Outgoing {
            id,
            ty,
            to,
            ts: now_secs(),
            extra: node
                .children()
                .map(|c| {
                    c.iter()
                        .filter(|n| n.tag == "device-identity")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        };
        let ack = NodeBuilder::new("ack")
            .attr("class", "message")
            .attr("id", msg.id.clone())
            .attr("from", msg.to.clone())
            .attr("t", msg.ts)
            .build();
        let targets = targets_of(node, &msg.to);
        let from_key = Self::addr(&st, &sphone, sdev, Server::Pn).to_string();
        Self::log_relay(&mut st, &from_key, &msg);

        let recipients = if msg.to.server == Server::Group {
            let per_device = if node.get_optional_child("participants").is_some() {
                targets
            } else {
                Vec::new()
            };
            let mut common: Vec<Node> = node.get_children_by_tag("enc").cloned().collect();
            common.extend(msg.extra.iter().cloned());
            self.relay_group_message(&mut st, (&sphone, sdev), &msg.to, node, per_device, common)
        } else {
            self.relay_direct(&mut st, (&sphone, sdev), &msg, targets)
        };
        if let Some(r) = st.record_mut(&from_key, &msg.id) {
            for d in recipients {
                if !r.recipients.contains(&d) {
                    r.recipients.push(d);
                }
            }
        }
        Self::send(&st, conn, ack);
    }

    /// Logs a relay of the message: a new record on its first send, one
    /// more `times_relayed` on every send.
    fn log_relay(st: &mut State, from_key: &str, msg: &Outgoing) {
        if st.record_mut(from_key, &msg.id).is_none() {
            st.push_record(MessageRecord {
                id: msg.id.clone(),
                from: from_key.to_string(),
                to: msg.to.to_non_ad().to_string(),
                r#type: msg.ty.clone(),
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
        if let Some(r) = st.record_mut(from_key, &msg.id) {
            r.times_relayed += 1;
            r.last_at_ms = now_millis();
        }
    }

    /// 1:1 fan-out: one copy per addressed device, except the simulated phone
    /// (device 0), which reads nothing. Returns the devices it went to.
    fn relay_direct(
        &self,
        st: &mut State,
        sender: (&str, u16),
        msg: &Outgoing,
        targets: Vec<(Jid, Vec<Node>)>,
    ) -> Vec<String> {
        let (sphone, sdev) = sender;
        let push_name = Self::push_name(st, sphone, sdev);
        let mut recipients = Vec::new();
        for (target, encs) in targets {
            let Some(rphone) = st.phone_of(&target.user, target.server == Server::Lid) else {
                continue;
            };
            if target.device == 0 {
                // The simulated phone reads nothing; the copy ends here.
                continue;
            }
            let own = rphone == sphone;
            let from = Self::addr(st, sphone, sdev, target.server);
            let mut b = NodeBuilder::new("message")
                .attr("from", from)
                .attr("id", msg.id.clone())
                .attr("type", msg.ty.clone())
                .attr("t", msg.ts);
            if own {
                b = b.attr("recipient", msg.to.to_non_ad());
            } else if !push_name.is_empty() {
                b = b.attr("notify", push_name.clone());
            }
            let mut children = encs;
            children.extend(msg.extra.iter().cloned());
            let copy = b.children(children).build();
            recipients.push(Self::addr(st, &rphone, target.device, Server::Pn).to_string());
            self.deliver(st, &rphone, target.device, copy);
        }
        recipients
    }

    pub(super) fn relay_receipt(self: &Arc<Self>, conn: u64, node: &Node) {
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
        let mut ids = vec![id];
        if let Some(list) = node.get_optional_child("list") {
            ids.extend(
                list.get_children_by_tag("item")
                    .filter_map(|i| i.attrs().optional_string("id").map(|s| s.to_string())),
            );
        }
        let reader = Jid::pn_device(sphone.clone(), sdev).to_string();
        for mid in &ids {
            Self::settle(&mut st, conn, "message", mid);
            Self::count_receipt(
                &mut st,
                &reader,
                (&tphone, target.device),
                mid,
                ty.as_deref(),
            );
        }
        self.forward_receipt(&mut st, node, (&sphone, sdev), &target, &tphone, group);
    }

    /// Counts a receipt from device `reader` for message `mid` of `sender`
    /// in the log: read/played receipts as `read`, delivery receipts as
    /// `delivered`.
    fn count_receipt(
        st: &mut State,
        reader: &str,
        sender: (&str, u16),
        mid: &str,
        ty: Option<&str>,
    ) {
        let (tphone, tdev) = sender;
        let sender_key = Jid::pn_device(tphone.to_string(), tdev).to_string();
        let is_read = matches!(ty, Some("read" | "read-self" | "played" | "played-self"));
        let is_delivery = matches!(ty, None | Some("" | "inactive"));
        // Read receipts name the chat, not the sender device: fall back to
        // the newest record with this id from any device of that user.
        let key = if st.record_mut(&sender_key, mid).is_some() {
            Some(sender_key)
        } else {
            let prefix = format!("{tphone}:");
            st.messages
                .iter()
                .rev()
                .find(|m| m.id == mid && m.from.starts_with(&prefix))
                .map(|m| m.from.clone())
        };
        if let Some(r) = key.and_then(|k| st.record_mut(&k, mid)) {
            if is_read {
                *r.read.entry(reader.to_string()).or_insert(0) += 1;
            } else if is_delivery {
                *r.delivered.entry(reader.to_string()).or_insert(0) += 1;
            }
        }
    }

    /// Relays the receipt to every device of the sender's account but the
    /// reader itself: from the reader (1:1) or from the group naming the
    /// reader as `participant`, with `recipient` on copies to the reader's
    /// own other devices.
    fn forward_receipt(
        &self,
        st: &mut State,
        node: &Node,
        reader: (&str, u16),
        target: &Jid,
        tphone: &str,
        group: Option<Jid>,
    ) {
        let (sphone, sdev) = reader;
        let from = Self::addr(st, sphone, sdev, target.server);
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
            .get(tphone)
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
            self.deliver(st, tphone, dev, n);
        }
    }
}

/// The per-device copies a message stanza asks for: each
/// `<participants><to jid>` with its children, or the stanza's own `<enc>`s
/// for `to` when it has no participants list.
fn targets_of(node: &Node, to: &Jid) -> Vec<(Jid, Vec<Node>)> {
    let mut targets = Vec::new();
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
    targets
}
