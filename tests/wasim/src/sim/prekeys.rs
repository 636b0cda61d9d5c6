//! Signal key distribution (`xmlns="encrypt"`): prekey upload, the count of
//! stored one-time prekeys, the key-bundle digest (so a returning client keeps
//! its keys instead of re-uploading) and bundle fetches, including the
//! simulated phone's bundle for device 0.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

use super::{Sim, be_u32, child_bytes};
use crate::state::{Account, Device, SignedPreKey};

/// One-time prekeys kept per device; uploads beyond it are dropped.
const MAX_PREKEYS: usize = 2000;

impl Sim {
    pub(super) fn store_prekeys(&self, conn: u64, id: &str, node: &Node) {
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
                if d.prekeys.len() < MAX_PREKEYS {
                    d.prekeys.push_back(k);
                }
            }
            if let Some(s) = skey {
                d.keys.signed_pre_key = s;
            }
        }
        Self::send(&st, conn, Self::result(id).build());
    }

    pub(super) fn count_prekeys(&self, conn: u64, id: &str) {
        let st = self.lock();
        let count = Self::device_of(&st, conn)
            .map(|d| d.prekeys.len())
            .unwrap_or(0);
        let n = Self::result(id)
            .children([NodeBuilder::new("count").attr("value", count).build()])
            .build();
        Self::send(&st, conn, n);
    }

    pub(super) fn key_digest(&self, conn: u64, id: &str) {
        let st = self.lock();
        let n = match Self::device_of(&st, conn) {
            Some(d) => Self::result(id).children([digest_node(d)]).build(),
            // Nothing stored: the client re-uploads its keys.
            None => Self::error(id, 404, "item-not-found"),
        };
        Self::send(&st, conn, n);
    }

    /// Bundles for the requested devices; each fetch hands out (and uses up)
    /// one of the device's one-time prekeys.
    pub(super) fn fetch_prekeys(&self, conn: u64, id: &str, node: &Node) {
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
                Some(d) => device_bundle(d, &jid),
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
}

/// Prekey bundle of a companion device: registration id, identity, one
/// one-time prekey (taken off its stock) while any is left, signed prekey and
/// the device identity it counter-signed when pairing.
fn device_bundle(d: &mut Device, jid: &Jid) -> Node {
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
