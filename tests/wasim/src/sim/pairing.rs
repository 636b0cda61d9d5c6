//! Linking a new companion device by QR, and what every linking ends with.
//!
//! A registration payload gets `<pair-device>` with six refs (the QR codes);
//! the simulated phone's scan (admin `POST /admin/scan`) creates the account if
//! needed, adds the device and sends `<pair-success>` carrying an
//! `ADVSignedDeviceIdentityHMAC`; the client's `<pair-device-sign>` answer
//! stores the counter-signed identity and ends pairing with stream error 515.
//! Linking by code ([`super::pair_code`]) ends in the same [`Sim::complete_pairing`].

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use hmac::{KeyInit, Mac};
use wacore::libsignal::protocol::{KeyPair, PublicKey};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent};
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;

use super::{SERVER, Sim, be_u32};
use crate::conns::EndReason;
use crate::state::{Account, Device, RegKeys, SignedPreKey, State, now_secs};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Sim {
    /// A registration payload: remembers the client's keys and shows it the
    /// refs its QR codes are made of.
    pub(super) fn begin_registration(
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
                Self::close(&st, conn, None, EndReason::ProtocolError);
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

    /// Adds the registering connection's device to `phone` (creating the
    /// account), and sends it `<pair-success>` with its identity signed by the
    /// phone and authenticated with the ADV secret both sides share.
    pub(super) fn complete_pairing(
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
        let container = signed_device_identity(acc, key_index, &keys.identity_pub, adv_secret)?;
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

    /// Responses the client sends to server IQs (pairing acks, pair-device-sign).
    pub(super) fn iq_response(&self, conn: u64, id: &str, node: &Node) {
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
                Self::close(&st, conn, Some(err), EndReason::PairingDone);
            }
            None => {
                tracing::warn!("pairing of {phone}:{dev} refused by the client");
                if let Some(a) = st.accounts.get_mut(&phone) {
                    a.devices.remove(&dev);
                }
            }
        }
    }

    /// Connection `conn` closed: its pairing-code requests go, and a device it
    /// was linking but never signed for is forgotten.
    pub(super) fn abandon_pairing(st: &mut State, conn: u64) {
        st.pair_codes.retain(|p| p.conn != conn);
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

    /// The account of `phone`, created on first use with a fresh LID and the
    /// simulated phone's keys.
    pub(super) fn account_mut<'a>(st: &'a mut State, phone: &str) -> &'a mut Account {
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
}

/// The `ADVSignedDeviceIdentityHMAC` of `<pair-success>`: the device's
/// identity (`key_index`) signed by the phone's account key, under an HMAC
/// keyed with the ADV secret.
fn signed_device_identity(
    acc: &Account,
    key_index: u32,
    identity_pub: &[u8; 32],
    adv_secret: &[u8],
) -> Result<Vec<u8>, String> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(acc.raw_id),
        timestamp: Some(now_secs()),
        key_index: Some(key_index),
        ..Default::default()
    }
    .encode_to_vec();
    let msg = [&[6u8, 0][..], &details, identity_pub].concat();
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
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(adv_secret).map_err(|e| e.to_string())?;
    mac.update(&signed);
    Ok(wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        ..Default::default()
    }
    .encode_to_vec())
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

fn decode32(b64: &str) -> Option<[u8; 32]> {
    BASE64_STANDARD.decode(b64).ok()?.try_into().ok()
}
