//! Linking by phone-number code (`link_code_companion_reg`).
//!
//! `companion_hello` registers the companion's request and returns its ref;
//! the phone's user types the code (admin `POST /admin/pair-code`) and the
//! phone answers with a `primary_hello` notification; `companion_finish`
//! carries the key bundle, which the phone unwraps with the ephemeral
//! agreement before deriving the ADV secret exactly as the client does.
//! Pairing then completes as for a QR scan ([`Sim::complete_pairing`]).

use std::time::Instant;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use wacore::libsignal::protocol::{KeyPair, PublicKey};
use wacore::pair_code::PairCodeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::{SERVER, Sim, child_bytes};
use crate::state::{PendingPairCode, RegKeys, State, now_secs};

impl Sim {
    /// `link_code_companion_reg` IQs: `companion_hello` registers the request
    /// and returns its ref; `companion_finish` carries the key bundle that
    /// completes pairing.
    pub(super) fn pair_code_request(&self, conn: u64, id: &str, node: &Node) {
        let Some(reg) = node.get_optional_child("link_code_companion_reg") else {
            return;
        };
        let mut a = reg.attrs();
        let stage = a.optional_string("stage").unwrap_or_default().to_string();
        let phone = a.optional_jid("jid").map(|j| j.user.to_string());
        drop(a);
        let mut st = self.lock();
        match stage.as_str() {
            "companion_hello" => Self::companion_hello(&mut st, conn, id, reg, phone),
            "companion_finish" => self.companion_finish(&mut st, conn, id, reg),
            _ => Self::send(&st, conn, Self::error(id, 400, "bad-request")),
        }
    }

    fn companion_hello(st: &mut State, conn: u64, id: &str, reg: &Node, phone: Option<String>) {
        let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub");
        let (Some(phone), Some(wrapped)) = (phone, wrapped) else {
            Self::send(st, conn, Self::error(id, 400, "bad-request"));
            return;
        };
        if wrapped.len() != 80 {
            Self::send(st, conn, Self::error(id, 400, "bad-request"));
            return;
        }
        let r: [u8; 12] = rand::random();
        let pairing_ref = format!("2@{}", BASE64_STANDARD.encode(r));
        // A new request from the same connection replaces the old one;
        // codes expire after the client's own validity window.
        let validity = PairCodeUtils::code_validity();
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
        Self::send(st, conn, n);
    }

    fn companion_finish(&self, st: &mut State, conn: u64, id: &str, reg: &Node) {
        match Self::finish_pair_code(st, conn, reg) {
            Ok((phone, keys, adv_secret)) => {
                Self::send(st, conn, Self::result(id).build());
                if let Err(e) = self.complete_pairing(st, conn, &phone, keys, &adv_secret) {
                    tracing::warn!("pair-code completion failed: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("companion_finish refused: {e}");
                Self::send(st, conn, Self::error(id, 400, "bad-request"));
            }
        }
    }

    /// The phone's side of `companion_finish`: unwraps the key bundle with the
    /// ephemeral agreement and derives the ADV secret the client derived.
    fn finish_pair_code(
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
        let eph_shared = primary
            .private_key
            .calculate_agreement(&public_key(&companion_eph)?)
            .map_err(|e| e.to_string())?;
        let bundle = unwrap_key_bundle(&eph_shared, &wrapped)?;
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
            .calculate_agreement(&public_key(&companion_identity)?)
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
        let node = primary_hello(id, pairing_ref, wrapped_primary.to_vec(), identity);
        Self::send(&st, conn, node);
        Ok(format!("{phone}@s.whatsapp.net"))
    }
}

/// The `primary_hello` notification: the phone's ephemeral key wrapped with
/// the code, and its identity key.
fn primary_hello(
    id: String,
    pairing_ref: String,
    wrapped_primary: Vec<u8>,
    identity: Vec<u8>,
) -> Node {
    NodeBuilder::new("notification")
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
                    .bytes(wrapped_primary)
                    .build(),
                NodeBuilder::new("primary_identity_pub")
                    .bytes(identity)
                    .build(),
            ])
            .build()])
        .build()
}

/// Decrypts the companion's wrapped key bundle (salt, IV, AES-GCM
/// ciphertext) under a key derived from the ephemeral agreement.
fn unwrap_key_bundle(eph_shared: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc_key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        eph_shared,
        Some(&wrapped[..32]),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut enc_key,
    )
    .map_err(|_| "hkdf")?;
    let iv: [u8; 12] = wrapped[32..44].try_into().map_err(|_| "iv")?;
    let mut bundle = Vec::new();
    wacore::libsignal::crypto::aes_256_gcm_decrypt(&enc_key, &iv, b"", &wrapped[44..], &mut bundle)
        .map_err(|_| "key bundle does not decrypt (wrong code?)")?;
    Ok(bundle)
}

fn public_key(b: &[u8]) -> Result<PublicKey, String> {
    PublicKey::from_djb_public_key_bytes(b).map_err(|e| e.to_string())
}
