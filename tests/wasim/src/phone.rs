//! The simulated primary phone as a Signal sender.
//!
//! After pairing, a real phone sends the new companion its app-state sync key
//! over Signal; whatsapp-rust waits up to 10 s for that share before its
//! first `Connected`. The phone here does the same: it opens a session from the
//! companion's registered bundle and encrypts one `AppStateSyncKeyShare`.
//!
//! The phone also writes the account's app state, encrypted under that key:
//! its `critical_block` collection carries the push name. A companion that
//! has no push name yet treats every login as a fresh pairing and waits the
//! 10 s for a key share again, so it must learn the name from this collection
//! (as it does from a real phone) for its later logins to be quick.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use wacore::libsignal::protocol::{
    CiphertextMessageType, Direction, IdentityChange, IdentityKey, IdentityKeyPair,
    IdentityKeyStore, KeyPair, PreKeyBundle, ProtocolAddress, PublicKey, SessionRecord,
    SessionStore, SignalProtocolError, UsePQRatchet, message_encrypt, process_prekey_bundle,
};
use waproto::buffa::{self, Message as _};
use waproto::whatsapp as wa;

use crate::state::{RegKeys, now_millis};

struct Identities {
    me: IdentityKeyPair,
    reg_id: u32,
    known: HashMap<String, IdentityKey>,
}

type SigResult<T> = std::result::Result<T, SignalProtocolError>;

#[async_trait::async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SigResult<IdentityKeyPair> {
        Ok(self.me.clone())
    }
    async fn get_local_registration_id(&self) -> SigResult<u32> {
        Ok(self.reg_id)
    }
    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SigResult<IdentityChange> {
        self.known.insert(address.to_string(), *identity);
        Ok(IdentityChange::NewOrUnchanged)
    }
    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SigResult<bool> {
        Ok(true)
    }
    async fn get_identity(&self, address: &ProtocolAddress) -> SigResult<Option<IdentityKey>> {
        Ok(self.known.get(&address.to_string()).copied())
    }
}

#[derive(Default)]
struct Sessions(HashMap<String, SessionRecord>);

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SigResult<Option<SessionRecord>> {
        Ok(self.0.get(&address.to_string()).cloned())
    }
    async fn has_session(&self, address: &ProtocolAddress) -> SigResult<bool> {
        Ok(self.0.contains_key(&address.to_string()))
    }
    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SigResult<()> {
        self.0.insert(address.to_string(), record);
        Ok(())
    }
}

/// Builds the `<enc>` payload (type, ciphertext) the phone sends the
/// companion `device` of account `raw_id`: the account's app-state sync key.
pub async fn app_state_key_share(
    phone_key: &KeyPair,
    phone_reg_id: u32,
    raw_id: u32,
    device: u16,
    keys: &RegKeys,
    (key_id, key_data): (Vec<u8>, [u8; 32]),
) -> Result<(&'static str, Vec<u8>)> {
    let mut ids = Identities {
        me: IdentityKeyPair::from(phone_key.clone()),
        reg_id: phone_reg_id,
        known: HashMap::new(),
    };
    let mut sessions = Sessions::default();
    let address = ProtocolAddress::new("companion", (device as u32).into());
    let bundle = PreKeyBundle::new(
        keys.registration_id,
        (device as u32).into(),
        None,
        keys.signed_pre_key.id.into(),
        PublicKey::from_djb_public_key_bytes(&keys.signed_pre_key.public)?,
        keys.signed_pre_key.signature.clone(),
        IdentityKey::new(PublicKey::from_djb_public_key_bytes(&keys.identity_pub)?),
    )?;
    // A Send RNG: this future runs on a spawned task.
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    process_prekey_bundle(
        &address,
        &mut sessions,
        &mut ids,
        &bundle,
        &mut rng,
        UsePQRatchet::No,
    )
    .await?;

    let share = wa::message::AppStateSyncKeyShare {
        keys: vec![wa::message::AppStateSyncKey {
            key_id: buffa::MessageField::some(wa::message::AppStateSyncKeyId {
                key_id: Some(key_id),
            }),
            key_data: buffa::MessageField::some(wa::message::AppStateSyncKeyData {
                key_data: Some(key_data.to_vec()),
                fingerprint: buffa::MessageField::some(wa::message::AppStateSyncKeyFingerprint {
                    raw_id: Some(raw_id),
                    current_index: Some(0),
                    device_indexes: vec![0],
                }),
                timestamp: Some(now_millis() as i64),
            }),
        }],
    };
    let msg = wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: buffa::MessageField::some(share),
            ..Default::default()
        }),
        ..Default::default()
    };
    let plain = wacore::messages::MessageUtils::pad_message_v2(msg.encode_to_vec());
    let ct = message_encrypt(&plain, &address, &mut sessions, &mut ids).await?;
    let ty = match ct.message_type() {
        CiphertextMessageType::PreKey => "pkmsg",
        CiphertextMessageType::Whisper => "msg",
        other => return Err(anyhow!("unexpected ciphertext type {other:?}")),
    };
    Ok((ty, ct.serialize().to_vec()))
}

/// The first (genesis, version 1) patch of the `critical_block` collection:
/// one `setting_pushName` SET, encrypted and MAC'd under the app-state key as
/// the phone writes it.
pub fn push_name_patch(push_name: &str, (key_id, key_data): &(Vec<u8>, [u8; 32])) -> Vec<u8> {
    use wacore::appstate::hash::{HashState, generate_patch_mac};
    const COLLECTION: &str = "critical_block";
    let keys = wacore::appstate::expand_app_state_keys(key_data);
    let value = wa::SyncActionValue {
        push_name_setting: buffa::MessageField::some(wa::sync_action_value::PushNameSetting {
            name: Some(push_name.to_string()),
        }),
        timestamp: Some(now_millis() as i64),
        ..Default::default()
    };
    let (mutation, _) = wacore::appstate::encode_record(
        wa::syncd_mutation::SyncdOperation::SET,
        br#"["setting_pushName"]"#,
        &value,
        &keys,
        key_id,
        &rand::random(),
        1,
    );
    let mutations = vec![mutation];
    let mut state = HashState::default();
    // A SET on an empty collection has no previous value to subtract.
    let (_, hashed) = state.update_hash(&mutations, |_, _| Ok(None));
    hashed.expect("no previous values to look up");
    state.version = 1;
    let mut patch = wa::SyncdPatch {
        version: buffa::MessageField::some(wa::SyncdVersion { version: Some(1) }),
        snapshot_mac: Some(state.generate_snapshot_mac(COLLECTION, &keys.snapshot_mac)),
        key_id: buffa::MessageField::some(wa::KeyId {
            id: Some(key_id.clone()),
        }),
        mutations,
        ..Default::default()
    };
    // The patch MAC covers the snapshot MAC, so it comes last.
    patch.patch_mac = Some(generate_patch_mac(&patch, COLLECTION, &keys.patch_mac, 1));
    patch.encode_to_vec()
}
