//! App state, as the simulated phone keeps it: the `AppStateSyncKeyShare` the
//! phone sends each new device over a real Signal session on its first login
//! (the client otherwise waits 10 s for it before `Connected`), and the
//! `w:sync:app:state` answers — `critical_block` holds one patch, the push
//! name, encrypted under that key; every other collection is empty.

use std::sync::Arc;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use super::Sim;
use crate::state::{State, now_secs};

impl Sim {
    /// First login after pairing: the phone sends the device its app-state
    /// key (the client otherwise waits 10 s for it before `Connected`).
    pub(super) fn share_app_state_key(self: &Arc<Self>, st: &mut State, phone: String, dev: u16) {
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

    /// App-state sync. The phone has written one patch, the push name in
    /// `critical_block` (version 1); every other collection is empty.
    pub(super) fn app_state(&self, conn: u64, id: &str, node: &Node) {
        let wanted = wanted_collections(node);
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
}

/// The collections a sync asks for, each with the version the client has.
fn wanted_collections(node: &Node) -> Vec<(String, u64)> {
    node.get_optional_child("sync")
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
        .unwrap_or_default()
}
