//! usync queries: for each user asked about (by JID or by phone number), the
//! protocols the query names — `devices` (the device list with its signed
//! key-index list), `contact` (in/out of WhatsApp) and `lid`.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent, Server};

use super::Sim;
use super::devices::key_index_list;
use crate::state::{Account, State};

impl Sim {
    pub(super) fn usync(&self, conn: u64, id: &str, node: &Node) {
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
        let users: Vec<Node> = usync
            .get_optional_child("list")
            .map(|list| {
                list.get_children_by_tag("user")
                    .filter_map(|u| usync_user(&st, u, &protocols))
                    .collect()
            })
            .unwrap_or_default();
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
}

/// The answer for one `<user>` of the query, `None` if it names nobody.
fn usync_user(st: &State, u: &Node, protocols: &[String]) -> Option<Node> {
    let jid = u.attrs().optional_jid("jid").or_else(|| {
        // <user><contact>+123</contact></user> queries by phone number.
        u.get_optional_child("contact")
            .and_then(|c| c.content_as_string())
            .map(|s| Jid::pn(s.trim_start_matches('+').to_string()))
    })?;
    let phone = st.phone_of(&jid.user, jid.server == Server::Lid);
    let acc = phone.as_ref().and_then(|p| st.accounts.get(p));
    let mut children = Vec::new();
    for p in protocols {
        match (p.as_str(), acc) {
            ("devices", Some(a)) => children.push(devices_protocol(a)),
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
    Some(
        NodeBuilder::new("user")
            .attr("jid", out_jid)
            .children(children)
            .build(),
    )
}

/// The `devices` protocol's answer: the phone (device 0) and every companion.
fn devices_protocol(a: &Account) -> Node {
    let primary = NodeBuilder::new("device").attr("id", "0").build();
    let devs = std::iter::once(primary).chain(a.devices.values().map(|d| {
        NodeBuilder::new("device")
            .attr("id", d.id)
            .attr("key-index", d.key_index)
            .build()
    }));
    // The client ignores companion devices unless the list comes with a
    // signed key-index list.
    NodeBuilder::new("devices")
        .children([
            NodeBuilder::new("device-list").children(devs).build(),
            NodeBuilder::new("key-index-list")
                .attr("ts", a.devices_ts)
                .bytes(key_index_list(a))
                .build(),
        ])
        .build()
}
