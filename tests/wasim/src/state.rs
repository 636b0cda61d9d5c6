//! In-memory model of the simulated WhatsApp service: accounts, their devices
//! and keys, live connections and the connection log, offline queues,
//! relayed-message log, media blobs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::Node;

use crate::conns::{ConnLog, EndReason};

/// Per-device offline queue bound: beyond it the oldest stanza is dropped
/// (and counted), like a server shedding an abandoned device's backlog.
pub const MAX_QUEUE: usize = 1000;
/// Relayed-message log bound.
pub const MAX_LOG: usize = 10_000;
/// Chat-state log bound (oldest dropped first).
pub const MAX_CHATSTATES: usize = 10_000;
/// Outbound channel bound per connection; a client this far behind is cut off.
pub const CONN_CHANNEL: usize = 1024;
/// Total media bytes kept; oldest blobs are evicted first.
pub const MAX_MEDIA_BYTES: usize = 256 << 20;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a connection task is told to do.
#[derive(Debug)]
pub enum Outbound {
    Node(Node),
    /// Send the node (if any), then close the socket; the connection log
    /// records the reason.
    Close(Option<Node>, EndReason),
}

/// Device keys the client registered in its handshake payload.
#[derive(Clone, Debug)]
pub struct RegKeys {
    pub noise_pub: [u8; 32],
    pub identity_pub: [u8; 32],
    pub registration_id: u32,
    pub signed_pre_key: SignedPreKey,
    pub push_name: String,
}

#[derive(Clone, Debug)]
pub struct SignedPreKey {
    pub id: u32,
    pub public: [u8; 32],
    pub signature: Vec<u8>,
}

/// A linked (companion) device of an account.
pub struct Device {
    pub id: u16,
    pub keys: RegKeys,
    pub key_index: u32,
    /// `ADVSignedDeviceIdentity` as counter-signed by the device
    /// (`<pair-device-sign>`); handed out with its prekey bundle.
    pub signed_identity: Option<Vec<u8>>,
    pub prekeys: VecDeque<(u32, [u8; 32])>,
    pub queue: VecDeque<Node>,
    /// Stanzas written to the device's socket and not yet acknowledged (by a
    /// receipt or `<ack>`); put back at the head of `queue` if the socket dies.
    pub inflight: VecDeque<(String, String, Node)>,
    pub dropped: u64,
    pub conn: Option<u64>,
    pub last_seen: Option<u64>,
    /// Whether the phone has sent this device its app-state sync key.
    pub key_shared: bool,
}

pub struct Account {
    pub phone: String,
    pub lid: String,
    /// The simulated phone's identity: signs device identities (ADV account key).
    pub phone_key: KeyPair,
    /// The phone's (device 0) Signal registration id and signed prekey, so
    /// clients can open sessions to the primary device as they insist on.
    pub phone_reg_id: u32,
    /// ADV `raw_id` of the account, shared by its device identities and key-index list.
    pub raw_id: u32,
    pub phone_spk: KeyPair,
    pub phone_spk_sig: Vec<u8>,
    pub devices: BTreeMap<u16, Device>,
    pub next_device: u16,
    pub next_key_index: u32,
    pub banned_until: Option<Instant>,
    pub created: u64,
    /// Time of the last device-list change: the key-index list's timestamp.
    pub devices_ts: u64,
    /// The user's profile name, which the phone keeps in its app state
    /// (`setting_pushName` in the `critical_block` collection).
    pub push_name: String,
    /// The account's app-state sync key (id, key data): the phone shares it with
    /// every companion and encrypts its app-state patches with it.
    pub app_state_key: (Vec<u8>, [u8; 32]),
}

pub struct Conn {
    pub tx: mpsc::Sender<Outbound>,
    /// (phone, device) once logged in.
    pub user: Option<(String, u16)>,
    /// Registration keys while the connection is pairing.
    pub registering: Option<RegKeys>,
    /// QR refs handed to a registering connection.
    pub refs: Vec<String>,
    pub passive_done: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct MessageRecord {
    pub id: String,
    pub from: String,
    pub to: String,
    pub r#type: String,
    /// Device JIDs the message was addressed to.
    pub recipients: Vec<String>,
    /// Times the message was written to each recipient device's socket.
    pub sent: BTreeMap<String, u32>,
    /// Delivery receipts per recipient device (a count above 1 means the
    /// device received the message twice).
    pub delivered: BTreeMap<String, u32>,
    /// Read/played receipts per recipient device.
    pub read: BTreeMap<String, u32>,
    pub queued: u32,
    pub times_relayed: u32,
    pub first_at_ms: u64,
    pub last_at_ms: u64,
}

/// A `<chatstate>` a device sent (typing indicators): who, to whom, which state, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatstateRecord {
    /// The sender's phone number and device.
    pub from: String,
    pub device: u16,
    /// The `to` attribute as sent (a user JID).
    pub to: String,
    /// `composing` or `paused`.
    pub state: String,
    /// `audio` for "recording…", else absent.
    pub media: Option<String>,
    pub at_ms: u64,
}

/// A pairing-code request: the companion said hello; the phone has not yet
/// typed the code (`primary` is set once it has).
pub struct PendingPairCode {
    pub conn: u64,
    pub phone: String,
    pub pairing_ref: String,
    pub wrapped_companion_ephemeral: Vec<u8>,
    /// The phone's ephemeral key pair and the companion's unwrapped
    /// ephemeral public key, once the code was entered.
    pub primary: Option<(KeyPair, [u8; 32])>,
    pub created: Instant,
}

/// A group chat: its members are accounts (phone numbers); every device of a
/// member receives the group's messages.
pub struct Group {
    pub id: String,
    pub subject: String,
    pub creator: String,
    pub members: Vec<String>,
    pub created: u64,
}

#[derive(Default)]
pub struct State {
    pub next_conn: u64,
    pub conns: HashMap<u64, Conn>,
    /// Every connection accepted, open or closed (bounded).
    pub conn_log: ConnLog,
    pub accounts: BTreeMap<String, Account>,
    pub lid_to_phone: HashMap<String, String>,
    pub next_lid: u64,
    /// Pair-success IQ id → (phone, device) awaiting `<pair-device-sign>`.
    pub pair_sign: HashMap<String, (String, u16, u64)>,
    pub pair_codes: Vec<PendingPairCode>,
    pub messages: VecDeque<MessageRecord>,
    /// Chat states devices sent, oldest first (bounded by [`MAX_CHATSTATES`]).
    pub chatstates: VecDeque<ChatstateRecord>,
    pub message_index: HashMap<(String, String), usize>,
    pub message_base: usize,
    pub media: VecDeque<(String, Vec<u8>)>,
    pub media_bytes: usize,
    pub next_id: u64,
    pub groups: BTreeMap<String, Group>,
    pub next_group: u64,
    /// While set, logins are parked here unanswered (a slow service), in order.
    pub held_logins: Option<Vec<HeldLogin>>,
    /// Client versions older than this are refused at login (`<failure reason="405">`).
    pub min_version: Option<(u32, u32, u32)>,
}

/// A login the service has not answered yet.
pub struct HeldLogin {
    pub conn: u64,
    pub client_static: [u8; 32],
    pub payload: waproto::whatsapp::ClientPayload,
}

impl State {
    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("WASIM{:08X}", self.next_id)
    }

    pub fn phone_of(&self, user: &str, lid: bool) -> Option<String> {
        if lid {
            self.lid_to_phone.get(user).cloned()
        } else if self.accounts.contains_key(user) {
            Some(user.to_string())
        } else {
            None
        }
    }

    pub fn record_mut(&mut self, from: &str, id: &str) -> Option<&mut MessageRecord> {
        let idx = *self
            .message_index
            .get(&(from.to_string(), id.to_string()))?;
        let pos = idx.checked_sub(self.message_base)?;
        self.messages.get_mut(pos)
    }

    pub fn push_record(&mut self, rec: MessageRecord) {
        if self.messages.len() >= MAX_LOG
            && let Some(old) = self.messages.pop_front()
        {
            self.message_index.remove(&(old.from, old.id));
            self.message_base += 1;
        }
        let idx = self.message_base + self.messages.len();
        self.message_index
            .insert((rec.from.clone(), rec.id.clone()), idx);
        self.messages.push_back(rec);
    }

    pub fn push_chatstate(&mut self, rec: ChatstateRecord) {
        if self.chatstates.len() >= MAX_CHATSTATES {
            self.chatstates.pop_front();
        }
        self.chatstates.push_back(rec);
    }

    pub fn put_media(&mut self, path: String, bytes: Vec<u8>) {
        self.media_bytes += bytes.len();
        self.media.push_back((path, bytes));
        while self.media_bytes > MAX_MEDIA_BYTES && self.media.len() > 1 {
            if let Some((_, b)) = self.media.pop_front() {
                self.media_bytes -= b.len();
            }
        }
    }

    pub fn get_media(&self, path: &str) -> Option<Vec<u8>> {
        self.media
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
    }
}
