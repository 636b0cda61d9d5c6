//! Groups (basic, `xmlns="w:g2"`): create (the creator plus the named
//! accounts), metadata query, the participating-groups list, and group
//! message fan-out to every member device with `from` = the group and
//! `participant` = the sender device. No administration: members and
//! subject never change after creation.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

use super::Sim;
use crate::state::{Group, State, now_secs};

impl Sim {
    /// A group's metadata: `<group>` with one `<participant>` per member, the
    /// creator as superadmin.
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
    pub(super) fn create_group(&self, conn: u64, id: &str, node: &Node) {
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

    pub(super) fn query_group(&self, conn: u64, id: &str, node: &Node) {
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

    /// Every group the connection's account is a member of.
    pub(super) fn participating_groups(&self, conn: u64, id: &str) {
        let st = self.lock();
        let me = st.conns.get(&conn).and_then(|c| c.user.clone());
        let groups = st
            .groups
            .values()
            .filter(|g| me.as_ref().is_some_and(|(p, _)| g.members.contains(p)))
            .map(|g| Self::group_node(&st, g));
        let n = Self::result(id)
            .children([NodeBuilder::new("groups").children(groups).build()])
            .build();
        Self::send(&st, conn, n);
    }

    /// Group fan-out: every device of every member but the sender's own gets
    /// the group ciphertext (`skmsg`) plus, when the sender included one for
    /// it, its per-device `<enc>` (the sender-key distribution). Returns the
    /// devices it went to.
    pub(super) fn relay_group_message(
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
        let push_name = Self::push_name(st, sphone, sdev);
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
}
