//! whatsapp-rust's storage `Backend` on wagate's own database (SQLite and PostgreSQL).
//!
//! One WhatsApp session is one row of `devices`; everything whatsapp-rust persists for it
//! (the `Device` record with its identity and noise keys, Signal sessions and prekeys,
//! app-state keys, LID mappings, …) lives in the `wa_*` tables under that `devices.id`, so a
//! session survives restarts and any node sharing the database can take it over. Deleting
//! the `devices` row cascades to all of it; [`wipe`] deletes it while keeping the row (logout).
//!
//! Layout (migrations `2026-11-21-000002_device_store`):
//! - `wa_store (device_id, kind, key) -> value`: opaque records. Raw bytes stay raw (Signal
//!   sessions, identities, sender keys, signed prekeys, base keys, group metadata, sent and
//!   pending-inbound payloads); serde records are serde_json (`Device`, `HashState`,
//!   `AppStateSyncKey`, `DeviceListRecord`) — the only serde format in the dependency tree.
//!   Keys made of several strings are length-prefixed so they are unambiguous.
//! - sealed at rest: every record that holds private key material — the `Device` (noise,
//!   identity and signed-prekey private keys, ADV secret), Signal sessions, one-time and signed
//!   prekeys, sender keys, app-state sync keys and message secrets — is AES-256-GCM sealed
//!   with a key derived from the master key and bound to its row (see [`SealKey`]), so
//!   the database or a backup alone cannot clone a linked account or decrypt its traffic.
//!   Public keys (identities, base keys) and metadata stay plain. Plain records written before
//!   sealing still load; [`seal_legacy_rows`] seals them at start.
//! - dedicated tables where a key-value row cannot answer efficiently: `wa_prekeys` (max id,
//!   uploaded flag, batch loads), `wa_app_state_macs` (per-collection clear, batch lookups),
//!   `wa_sender_key_devices` (per group and per device JID), `wa_lid_mappings` (reverse
//!   lookup by phone number), `wa_tc_tokens` (expiry and atomic conditional upserts) and
//!   `wa_msg_secrets` (merge-on-conflict upserts and expiry).
//!
//! Every trait method is one short blocking unit on [`Db::run`]; the Signal hot path
//! (session, identity, prekey, sender-key loads) is a single primary-key lookup. Batches run in
//! one transaction. Times we stamp are epoch ms; timestamps that whatsapp-rust hands us (tc
//! tokens, message secrets, expiry cutoffs) are its unix seconds, stored as given.
//!
//! Files: this one holds the store type, the `wa_store` building blocks and the helpers the
//! session manager calls; each whatsapp-rust store trait has its own file (`signal`,
//! `app_sync`, `protocol`, `msg_secrets`, `device`), and `sealing` the at-rest sealing.

mod app_sync;
mod device;
mod msg_secrets;
mod protocol;
mod sealing;
mod signal;

use std::sync::Arc;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use diesel::sql_types::{Binary, Integer};
use diesel::upsert::excluded;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::{Result as StoreResult, StoreError};

use super::cluster::Fence;
use super::schema::{
    wa_app_state_macs, wa_lid_mappings, wa_msg_secrets, wa_prekeys, wa_sender_key_devices,
    wa_store, wa_tc_tokens,
};
use super::{Db, DbConn, now_ms};
use crate::crypto::{MasterKey, SealKey};
use crate::db_run;
use crate::error::{Error, Result};

pub use sealing::seal_legacy_rows;
use sealing::{is_sealed_kind, kv_aad, prekey_aad, seal_key, unseal};

// Kinds of `wa_store` rows.
const K_IDENTITY: &str = "identity";
const K_SESSION: &str = "session";
const K_SIGNED_PREKEY: &str = "signed_prekey";
const K_SENDER_KEY: &str = "sender_key";
const K_SYNC_KEY: &str = "sync_key";
const K_SYNC_KEY_LATEST: &str = "sync_key_latest";
const K_APP_VERSION: &str = "app_state_version";
const K_BASE_KEY: &str = "base_key";
const K_DEVICE_LIST: &str = "device_list";
const K_GROUP_METADATA: &str = "group_metadata";
const K_SENT_MESSAGE: &str = "sent_message";
const K_PENDING_INBOUND: &str = "pending_inbound";
const K_DEVICE: &str = "device";

/// Bound on the bind parameters of one `IN (...)` list (both backends allow far more).
const IN_CHUNK: usize = 500;

diesel::define_sql_function! {
    /// Byte length of a BLOB / BYTEA.
    fn length(x: Binary) -> Integer;
}

diesel::define_sql_function! {
    /// `len` bytes of a BLOB / BYTEA from the 1-based `start` (the same on both backends).
    fn substr(x: Binary, start: Integer, len: Integer) -> Binary;
}

/// The `Backend` of one WhatsApp session (one `devices.id`) on wagate's database.
///
/// Cheap to clone; hand it to whatsapp-rust as `Arc::new(store)` through
/// `Bot::builder().with_backend(..)`. The `devices` row must exist before the first write
/// (the tables reference it, `ON DELETE CASCADE`).
#[derive(Clone)]
pub struct DbDeviceStore {
    db: Db,
    device_id: Arc<str>,
    seal: SealKey,
    /// The lease the session runs under: every write checks it in its transaction.
    fence: Option<Arc<Fence>>,
}

impl DbDeviceStore {
    /// The store of the session `device_id` (`devices.id`); its private key material is
    /// sealed with a key derived from `master`.
    pub fn new(db: Db, master: &MasterKey, device_id: String) -> DbDeviceStore {
        DbDeviceStore {
            db,
            device_id: Arc::from(device_id),
            seal: seal_key(master),
            fence: None,
        }
    }

    /// The store as a running session writes it: every write is refused (`SessionMoved`)
    /// once `fence` no longer holds the session's lease, so a node that lost the session
    /// cannot touch its Signal sessions, prekeys or app state.
    pub fn fenced(mut self, fence: Fence) -> DbDeviceStore {
        self.fence = Some(Arc::new(fence));
        self
    }

    /// The `devices.id` this store belongs to.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Whether the session holds a paired WhatsApp identity; see [`is_paired`].
    pub async fn is_paired(&self) -> Result<bool> {
        Ok(self.load_device().await?.is_some_and(|d| d.pn.is_some()))
    }

    /// The persisted `Device` record, if any; see [`load_device`].
    pub async fn load_device(&self) -> Result<Option<Device>> {
        let bytes = self.kv_get_async(K_DEVICE, String::new()).await;
        match bytes.map_err(|e| Error::Internal(e.to_string()))? {
            None => Ok(None),
            Some(b) => parse_device(&self.device_id, &b).map(Some),
        }
    }

    /// Deletes everything whatsapp-rust stored for this session, atomically; see [`wipe`].
    /// Returns the number of rows deleted.
    pub async fn wipe(&self) -> Result<usize> {
        let dev = self.device_id.clone();
        self.db.run(move |c| wipe(c, &dev)).await
    }

    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &str) -> Result<T> + Send + 'static,
    {
        let dev = self.device_id.clone();
        self.db.run(move |c| f(c, &dev)).await.map_err(store_err)
    }

    /// [`Self::run`] for a write: in one transaction with the check of the lease, when the
    /// store is fenced. Its commit does not wait for the disk (`Db::run_relaxed`): the store
    /// changes with every message (ratchets, sender keys), a record lost to a machine crash
    /// is repaired by the protocol's retries and re-keying, and an fsync per change would
    /// bound every session's throughput by the disk. The identity is the exception
    /// ([`Self::write_durable`]).
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &str) -> Result<T> + Send + 'static,
    {
        self.write_as(true, f).await
    }

    /// [`Self::write`] that commits durably: the device record (identity and noise keys),
    /// whose loss would unlink the session.
    async fn write_durable<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &str) -> Result<T> + Send + 'static,
    {
        self.write_as(false, f).await
    }

    async fn write_as<T, F>(&self, relaxed: bool, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &str) -> Result<T> + Send + 'static,
    {
        let dev = self.device_id.clone();
        let fence = self.fence.clone();
        let r = match fence {
            None => self.db.run_relaxed(move |c| f(c, &dev)).await,
            Some(fence) => {
                self.db
                    .run(move |c| {
                        c.relaxed_transaction(|c| {
                            crate::storage::cluster::check_fence(c, &fence)?;
                            f(c, &dev)
                        })
                    })
                    .await
            }
        };
        if !relaxed && r.is_ok() {
            self.db.make_durable().await.map_err(store_err)?;
        }
        r.map_err(store_err)
    }

    /// `value` as stored: sealed when its kind holds private key material.
    fn seal_kv(&self, kind: &str, key: &str, value: Vec<u8>) -> Vec<u8> {
        if is_sealed_kind(kind) {
            self.seal.seal(&kv_aad(&self.device_id, kind, key), &value)
        } else {
            value
        }
    }

    fn open_kv(&self, kind: &str, key: &str, stored: Vec<u8>) -> StoreResult<Vec<u8>> {
        if is_sealed_kind(kind) {
            unseal(&self.seal, &kv_aad(&self.device_id, kind, key), stored).map_err(store_err)
        } else {
            Ok(stored)
        }
    }

    async fn kv_get_async(&self, kind: &'static str, key: String) -> StoreResult<Option<Vec<u8>>> {
        let k = key.clone();
        self.run(move |c, dev| kv_get(c, dev, kind, &k))
            .await?
            .map(|v| self.open_kv(kind, &key, v))
            .transpose()
    }

    async fn kv_put_async(
        &self,
        kind: &'static str,
        key: String,
        value: Vec<u8>,
    ) -> StoreResult<()> {
        let value = self.seal_kv(kind, &key, value);
        let put = move |c: &mut DbConn, dev: &str| kv_put(c, dev, kind, &key, &value);
        if kind == K_DEVICE {
            self.write_durable(put).await
        } else {
            self.write(put).await
        }
    }

    fn seal_prekey(&self, id: u32, record: &[u8]) -> Vec<u8> {
        self.seal
            .seal(&prekey_aad(&self.device_id, i64::from(id)), record)
    }

    fn open_prekey(&self, id: i64, stored: Vec<u8>) -> StoreResult<Vec<u8>> {
        unseal(&self.seal, &prekey_aad(&self.device_id, id), stored).map_err(store_err)
    }

    async fn kv_delete_async(&self, kind: &'static str, key: String) -> StoreResult<()> {
        self.write(move |c, dev| kv_delete(c, dev, kind, &key).map(|_| ()))
            .await
    }

    async fn kv_put_batch_async(
        &self,
        kind: &'static str,
        rows: Vec<(String, Vec<u8>)>,
    ) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, Vec<u8>)> = rows
            .into_iter()
            .map(|(k, v)| {
                let v = self.seal_kv(kind, &k, v);
                (k, v)
            })
            .collect();
        self.write(move |c, dev| {
            c.transaction(|c| {
                for (key, value) in &rows {
                    kv_put(c, dev, kind, key, value)?;
                }
                Ok(())
            })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Public helpers for the session manager (blocking; run them through `Db::run`).
// ---------------------------------------------------------------------------------------------

/// Deletes everything whatsapp-rust stored for the session `device_id` (keys, sessions,
/// app state, …) but not its `devices` row: use it on logout, or before re-pairing. Returns
/// the number of rows deleted. Atomic: it runs in its own transaction, or joins the caller's
/// if `conn` is already inside [`DbConn::transaction`]. Stop the session's client first: a
/// running client would write its in-memory state (device record, Signal cache) back.
pub fn wipe(conn: &mut DbConn, device_id: &str) -> Result<usize> {
    let depth = db_run!(conn, |c| {
        AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth()
    })?;
    if depth.is_some() {
        wipe_rows(conn, device_id)
    } else {
        conn.transaction(|c| wipe_rows(c, device_id))
    }
}

fn wipe_rows(conn: &mut DbConn, device_id: &str) -> Result<usize> {
    let mut n = 0;
    n += db_run!(conn, |c| diesel::delete(
        wa_store::table.filter(wa_store::device_id.eq(device_id))
    )
    .execute(c))?;
    n += db_run!(conn, |c| diesel::delete(
        wa_prekeys::table.filter(wa_prekeys::device_id.eq(device_id))
    )
    .execute(c))?;
    n += db_run!(conn, |c| diesel::delete(
        wa_app_state_macs::table.filter(wa_app_state_macs::device_id.eq(device_id))
    )
    .execute(c))?;
    n += db_run!(conn, |c| diesel::delete(
        wa_sender_key_devices::table.filter(wa_sender_key_devices::device_id.eq(device_id))
    )
    .execute(c))?;
    n += db_run!(conn, |c| diesel::delete(
        wa_lid_mappings::table.filter(wa_lid_mappings::device_id.eq(device_id))
    )
    .execute(c))?;
    n += db_run!(conn, |c| diesel::delete(
        wa_tc_tokens::table.filter(wa_tc_tokens::device_id.eq(device_id))
    )
    .execute(c))?;
    n += db_run!(conn, |c| diesel::delete(
        wa_msg_secrets::table.filter(wa_msg_secrets::device_id.eq(device_id))
    )
    .execute(c))?;
    Ok(n)
}

/// The persisted whatsapp-rust `Device` of the session (identity and noise keys, `pn`/`lid`
/// once paired, push name, …), or `None` if the session has never been started.
pub fn load_device(
    conn: &mut DbConn,
    master: &MasterKey,
    device_id: &str,
) -> Result<Option<Device>> {
    match kv_get(conn, device_id, K_DEVICE, "")? {
        None => Ok(None),
        Some(stored) => {
            let bytes = unseal(&seal_key(master), &kv_aad(device_id, K_DEVICE, ""), stored)?;
            parse_device(device_id, &bytes).map(Some)
        }
    }
}

fn parse_device(device_id: &str, bytes: &[u8]) -> Result<Device> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("corrupt device record of {device_id}: {e}")))
}

/// Whether the session is paired: its `Device` record exists and carries the account's
/// phone-number JID (`pn`), which is exactly when whatsapp-rust logs in instead of showing a
/// QR code. A fresh session (never started, or started but not yet scanned) is `false`, and
/// so is a wiped one.
pub fn is_paired(conn: &mut DbConn, master: &MasterKey, device_id: &str) -> Result<bool> {
    Ok(load_device(conn, master, device_id)?.is_some_and(|d| d.pn.is_some()))
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

fn store_err(e: Error) -> StoreError {
    match e {
        Error::Unavailable(m) => StoreError::Connection(m.into()),
        Error::Internal(m) => StoreError::Database(m.into()),
        other => StoreError::Database(Box::new(other)),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Serialization(Box::new(e)))
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Serialization(Box::new(e)))
}

/// An unambiguous single string for a key made of several parts: every part but the last is
/// written as `<byte length>:<part>`.
fn composite_key(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    if let Some((last, init)) = parts.split_last() {
        for p in init {
            out.push_str(&p.len().to_string());
            out.push(':');
            out.push_str(p);
        }
        out.push_str(last);
    }
    out
}

/// LIKE pattern matching `prefix` literally (escape character `\`).
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for ch in prefix.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

fn kv_get(c: &mut DbConn, dev: &str, kind: &str, key: &str) -> Result<Option<Vec<u8>>> {
    use wa_store::dsl as s;
    Ok(db_run!(c, |c| s::wa_store
        .find((dev, kind, key))
        .select(s::value)
        .first::<Vec<u8>>(c)
        .optional())?)
}

fn kv_exists(c: &mut DbConn, dev: &str, kind: &str, key: &str) -> Result<bool> {
    use wa_store::dsl as s;
    Ok(db_run!(c, |c| diesel::select(diesel::dsl::exists(
        s::wa_store.find((dev, kind, key))
    ))
    .get_result::<bool>(c))?)
}

fn kv_put(c: &mut DbConn, dev: &str, kind: &str, key: &str, value: &[u8]) -> Result<()> {
    use wa_store::dsl as s;
    let now = now_ms();
    db_run!(c, |c| diesel::insert_into(s::wa_store)
        .values((
            s::device_id.eq(dev),
            s::kind.eq(kind),
            s::key.eq(key),
            s::value.eq(value),
            s::updated_at.eq(now),
        ))
        .on_conflict((s::device_id, s::kind, s::key))
        .do_update()
        .set((
            s::value.eq(excluded(s::value)),
            s::updated_at.eq(excluded(s::updated_at))
        ))
        .execute(c))?;
    Ok(())
}

fn kv_delete(c: &mut DbConn, dev: &str, kind: &str, key: &str) -> Result<usize> {
    use wa_store::dsl as s;
    Ok(db_run!(c, |c| diesel::delete(
        s::wa_store.find((dev, kind, key))
    )
    .execute(c))?)
}

/// Every `(key, value)` of one kind, in key order.
fn kv_scan(c: &mut DbConn, dev: &str, kind: &str) -> Result<Vec<(String, Vec<u8>)>> {
    use wa_store::dsl as s;
    Ok(db_run!(c, |c| s::wa_store
        .filter(s::device_id.eq(dev).and(s::kind.eq(kind)))
        .order(s::key)
        .select((s::key, s::value))
        .load::<(String, Vec<u8>)>(c))?)
}

/// Deletes the rows of one kind written before `cutoff_ms`; returns how many.
fn kv_expire(c: &mut DbConn, dev: &str, kind: &str, cutoff_ms: i64) -> Result<usize> {
    use wa_store::dsl as s;
    Ok(db_run!(c, |c| diesel::delete(
        s::wa_store.filter(
            s::device_id
                .eq(dev)
                .and(s::kind.eq(kind))
                .and(s::updated_at.lt(cutoff_ms)),
        ),
    )
    .execute(c))?)
}

fn secs_to_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_are_unambiguous() {
        assert_ne!(composite_key(&["a:b", "c"]), composite_key(&["a", "b:c"]));
        assert_ne!(composite_key(&["1:a", "b"]), composite_key(&["1", ":ab"]));
        assert_eq!(composite_key(&["ab", "c"]), "2:abc");
        assert_eq!(composite_key(&["x", "", "y"]), "1:x0:y");
    }

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("12_3%\\"), "12\\_3\\%\\\\%");
    }
}
