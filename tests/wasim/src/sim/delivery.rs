//! Getting stanzas to a device exactly once: straight to its live connection
//! once that is active, else onto its bounded offline queue; stanzas written
//! to a socket stay in flight until the device's receipt or `<ack>` settles
//! them, and go back to the head of the queue if the socket dies. The
//! passive→active IQ replays the offline queue (`<offline_preview>`, stanzas
//! marked `offline`, `<offline count>`). Each message's record in the log
//! counts what happened to it (`sent`, `queued`).

use std::sync::Arc;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

use super::Sim;
use crate::state::{MAX_QUEUE, MessageRecord, State, now_secs};

impl Sim {
    /// `<iq xmlns="passive"><active/>`: the device is ready for stanzas. Its
    /// offline backlog is announced, replayed with the `offline` attribute,
    /// then closed by `<offline count>`; a freshly paired device then gets the
    /// phone's app-state key.
    pub(super) fn go_active(self: &Arc<Self>, conn: u64, id: &str) {
        let mut st = self.lock();
        Self::send(&st, conn, Self::result(id).build());
        let queued: Vec<Node> = match Self::device_of_mut(&mut st, conn) {
            Some(d) => d.queue.drain(..).collect(),
            None => Vec::new(),
        };
        let count = queued.len();
        let me = st.conns.get(&conn).and_then(|c| c.user.clone());
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

    /// Hands a stanza to a device: straight to its live connection once it is
    /// active, else onto its bounded offline queue.
    pub(super) fn deliver(&self, st: &mut State, phone: &str, dev: u16, node: Node) {
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
    pub(super) fn settle(st: &mut State, conn: u64, class: &str, id: &str) {
        if let Some(d) = Self::device_of_mut(st, conn)
            && let Some(pos) = d
                .inflight
                .iter()
                .position(|(c, i, _)| c == class && i == id)
        {
            d.inflight.remove(pos);
        }
    }

    /// The socket `conn` of device `phone:dev` closed. Unless a newer
    /// connection already replaced it, the device goes offline and its
    /// unacknowledged stanzas go back to the head of its queue, in order.
    pub(super) fn went_offline(st: &mut State, conn: u64, phone: &str, dev: u16) {
        let Some(d) = st
            .accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&dev))
            .filter(|d| d.conn == Some(conn))
        else {
            return;
        };
        d.conn = None;
        d.last_seen = Some(now_secs());
        let requeued: Vec<Node> = d.inflight.drain(..).map(|(_, _, n)| n).collect();
        for n in requeued.iter().rev() {
            d.queue.push_front(n.clone());
        }
        while d.queue.len() > MAX_QUEUE {
            d.queue.pop_front();
            d.dropped += 1;
        }
        for n in &requeued {
            if let Some(r) = Self::record_for(st, n) {
                r.queued += 1;
            }
        }
    }

    /// The log record of the message `node` carries, found by its id and
    /// sender device.
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
}
