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

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Integer, Text};
use diesel::upsert::excluded;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::stats::StorageResourceReport;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::{Result as StoreResult, StoreError};
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow, ProtocolStore,
    SignalStore, TcTokenEntry,
};

use super::schema::{
    wa_app_state_macs, wa_lid_mappings, wa_msg_secrets, wa_prekeys, wa_sender_key_devices,
    wa_store, wa_tc_tokens,
};
use super::{Db, DbConn, now_ms};
use crate::crypto::{MasterKey, SealKey};
use crate::db_run;
use crate::error::{Error, Result};

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

/// The `wa_store` kinds whose values hold private key material, sealed at rest.
const SEALED_KINDS: [&str; 5] = [
    K_DEVICE,
    K_SESSION,
    K_SIGNED_PREKEY,
    K_SENDER_KEY,
    K_SYNC_KEY,
];

/// Derivation label of the device store's sealing key (a format change takes a new label).
const SEAL_LABEL: &str = "wagate device store v1";

fn is_sealed_kind(kind: &str) -> bool {
    SEALED_KINDS.contains(&kind)
}

fn seal_key(master: &MasterKey) -> SealKey {
    master.seal_key(SEAL_LABEL)
}

/// What a sealed `wa_store` value is bound to: its table, session, kind and key.
fn kv_aad(dev: &str, kind: &str, key: &str) -> Vec<u8> {
    composite_key(&["wa_store", dev, kind, key]).into_bytes()
}

fn prekey_aad(dev: &str, id: i64) -> Vec<u8> {
    composite_key(&["wa_prekeys", dev, &id.to_string()]).into_bytes()
}

fn secret_aad(dev: &str, chat: &str, sender: &str, msg_id: &str) -> Vec<u8> {
    composite_key(&["wa_msg_secrets", dev, chat, sender, msg_id]).into_bytes()
}

/// The plaintext of a stored secret record: sealed ones are opened, a plain one is a record
/// written before sealing (kept readable until [`seal_legacy_rows`] seals it).
fn unseal(key: &SealKey, aad: &[u8], stored: Vec<u8>) -> Result<Vec<u8>> {
    if SealKey::is_sealed(&stored) {
        key.open(aad, &stored)
    } else {
        Ok(stored)
    }
}

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
}

impl DbDeviceStore {
    /// The store of the session `device_id` (`devices.id`); its private key material is
    /// sealed with a key derived from `master`.
    pub fn new(db: Db, master: &MasterKey, device_id: String) -> DbDeviceStore {
        DbDeviceStore {
            db,
            device_id: Arc::from(device_id),
            seal: seal_key(master),
        }
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
        self.run(move |c, dev| kv_put(c, dev, kind, &key, &value))
            .await
    }

    fn seal_prekey(&self, id: u32, record: &[u8]) -> Vec<u8> {
        self.seal
            .seal(&prekey_aad(&self.device_id, i64::from(id)), record)
    }

    fn open_prekey(&self, id: i64, stored: Vec<u8>) -> StoreResult<Vec<u8>> {
        unseal(&self.seal, &prekey_aad(&self.device_id, id), stored).map_err(store_err)
    }

    async fn kv_delete_async(&self, kind: &'static str, key: String) -> StoreResult<()> {
        self.run(move |c, dev| kv_delete(c, dev, kind, &key).map(|_| ()))
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
        self.run(move |c, dev| {
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

/// Seals the plain private-key records written before the device store was sealed (all
/// sessions), in one transaction; returns how many. Idempotent, and safe beside running
/// nodes: a row is replaced only while it still holds the plain value that was read. Run at
/// start, after the migrations.
pub fn seal_legacy_rows(conn: &mut DbConn, master: &MasterKey) -> Result<usize> {
    let DbConn::Sqlite(c) = conn else {
        return seal_plain_rows(conn, master);
    };
    // On SQLite the replaced plaintext must not linger in the file's free space or in old
    // page versions in the WAL: zero what the pass frees, then fold the WAL in and empty it.
    c.batch_execute("PRAGMA secure_delete = ON")?;
    let sealed = seal_plain_rows(conn, master);
    let DbConn::Sqlite(c) = conn else {
        unreachable!("matched above")
    };
    let wiped = match sealed {
        Ok(n) if n > 0 => c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)"),
        _ => Ok(()),
    };
    c.batch_execute("PRAGMA secure_delete = OFF")?;
    wiped?;
    sealed
}

fn seal_plain_rows(conn: &mut DbConn, master: &MasterKey) -> Result<usize> {
    let key = seal_key(master);
    let magic = SealKey::MAGIC.to_vec();
    let overhead = i32::try_from(SealKey::OVERHEAD).expect("small");
    conn.transaction(|c| {
        let mut n = 0;
        {
            use wa_store::dsl as s;
            let plain = length(s::value)
                .lt(overhead)
                .or(substr(s::value, 1, 8).ne(magic.clone()));
            let rows: Vec<(String, String, String, Vec<u8>)> = db_run!(c, |c| s::wa_store
                .filter(s::kind.eq_any(SEALED_KINDS))
                .filter(plain)
                .select((s::device_id, s::kind, s::key, s::value))
                .load(c))?;
            for (dev, kind, k, value) in rows {
                let sealed = key.seal(&kv_aad(&dev, &kind, &k), &value);
                n += db_run!(c, |c| diesel::update(
                    s::wa_store
                        .find((&dev, &kind, &k))
                        .filter(s::value.eq(&value)),
                )
                .set(s::value.eq(&sealed))
                .execute(c))?;
            }
        }
        {
            use wa_prekeys::dsl as p;
            let plain = length(p::record)
                .lt(overhead)
                .or(substr(p::record, 1, 8).ne(magic.clone()));
            let rows: Vec<(String, i64, Vec<u8>)> = db_run!(c, |c| p::wa_prekeys
                .filter(plain)
                .select((p::device_id, p::id, p::record))
                .load(c))?;
            for (dev, id, record) in rows {
                let sealed = key.seal(&prekey_aad(&dev, id), &record);
                n += db_run!(c, |c| diesel::update(
                    p::wa_prekeys.find((&dev, id)).filter(p::record.eq(&record)),
                )
                .set(p::record.eq(&sealed))
                .execute(c))?;
            }
        }
        {
            use wa_msg_secrets::dsl as m;
            let plain = length(m::secret)
                .lt(overhead)
                .or(substr(m::secret, 1, 8).ne(magic.clone()));
            let rows: Vec<(String, String, String, String, Vec<u8>)> =
                db_run!(c, |c| m::wa_msg_secrets
                    .filter(plain)
                    .select((m::device_id, m::chat, m::sender, m::msg_id, m::secret))
                    .load(c))?;
            for (dev, chat, sender, msg_id, secret) in rows {
                let sealed = key.seal(&secret_aad(&dev, &chat, &sender, &msg_id), &secret);
                n += db_run!(c, |c| diesel::update(
                    m::wa_msg_secrets
                        .find((&dev, &chat, &sender, &msg_id))
                        .filter(m::secret.eq(&secret)),
                )
                .set(m::secret.eq(&sealed))
                .execute(c))?;
            }
        }
        Ok(n)
    })
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

/// The SQL of a raw statement for the connection's backend: written with PostgreSQL's `$n`
/// placeholders, which SQLite spells `?n`.
fn portable_sql<'a>(conn: &DbConn, sql: &'a str) -> Cow<'a, str> {
    match conn {
        DbConn::Postgres(_) => Cow::Borrowed(sql),
        DbConn::Sqlite(_) => Cow::Owned(sql.replace('$', "?")),
    }
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

fn u32_id(id: i64) -> StoreResult<u32> {
    u32::try_from(id).map_err(|_| StoreError::Validation(format!("id out of range: {id}")))
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

fn identity_array(address: &str, bytes: Vec<u8>) -> StoreResult<[u8; 32]> {
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        StoreError::Validation(format!(
            "identity key of {address} has {} bytes, expected 32",
            bytes.len()
        ))
    })
}

fn upsert_prekey(c: &mut DbConn, dev: &str, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
    use wa_prekeys::dsl as p;
    db_run!(c, |c| diesel::insert_into(p::wa_prekeys)
        .values((
            p::device_id.eq(dev),
            p::id.eq(i64::from(id)),
            p::record.eq(record),
            p::uploaded.eq(uploaded),
        ))
        .on_conflict((p::device_id, p::id))
        .do_update()
        .set((
            p::record.eq(excluded(p::record)),
            p::uploaded.eq(excluded(p::uploaded))
        ))
        .execute(c))?;
    Ok(())
}

fn upsert_lid_mapping(c: &mut DbConn, dev: &str, e: &LidPnMappingEntry) -> Result<()> {
    use wa_lid_mappings::dsl as l;
    db_run!(c, |c| diesel::insert_into(l::wa_lid_mappings)
        .values((
            l::device_id.eq(dev),
            l::lid.eq(&e.lid),
            l::phone_number.eq(&e.phone_number),
            l::created_at.eq(e.created_at),
            l::updated_at.eq(e.updated_at),
            l::learning_source.eq(&e.learning_source),
        ))
        .on_conflict((l::device_id, l::lid))
        .do_update()
        .set((
            l::phone_number.eq(excluded(l::phone_number)),
            l::created_at.eq(excluded(l::created_at)),
            l::updated_at.eq(excluded(l::updated_at)),
            l::learning_source.eq(excluded(l::learning_source)),
        ))
        .execute(c))?;
    Ok(())
}

type LidRow = (String, String, i64, i64, String);

fn lid_entry(
    (lid, phone_number, created_at, updated_at, learning_source): LidRow,
) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid,
        phone_number,
        created_at,
        updated_at,
        learning_source,
    }
}

const UPSERT_MSG_SECRET: &str = "INSERT INTO wa_msg_secrets \
     (device_id, chat, sender, msg_id, secret, expires_at, message_ts) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (device_id, chat, sender, msg_id) DO UPDATE SET \
     secret = excluded.secret, \
     expires_at = CASE \
         WHEN wa_msg_secrets.expires_at = 0 OR excluded.expires_at = 0 THEN 0 \
         WHEN excluded.expires_at > wa_msg_secrets.expires_at THEN excluded.expires_at \
         ELSE wa_msg_secrets.expires_at END, \
     message_ts = CASE \
         WHEN excluded.message_ts > wa_msg_secrets.message_ts THEN excluded.message_ts \
         ELSE wa_msg_secrets.message_ts END";

const TOUCH_TC_SENDER: &str = "INSERT INTO wa_tc_tokens \
     (device_id, jid, token, token_timestamp, sender_timestamp) \
     VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (device_id, jid) DO UPDATE SET sender_timestamp = CASE \
         WHEN wa_tc_tokens.sender_timestamp IS NULL \
           OR wa_tc_tokens.sender_timestamp < excluded.sender_timestamp \
         THEN excluded.sender_timestamp \
         ELSE wa_tc_tokens.sender_timestamp END";

const STORE_RECEIVED_TC: &str = "INSERT INTO wa_tc_tokens \
     (device_id, jid, token, token_timestamp, sender_timestamp) \
     VALUES ($1, $2, $3, $4, NULL) \
     ON CONFLICT (device_id, jid) DO UPDATE SET \
         token = excluded.token, token_timestamp = excluded.token_timestamp \
     WHERE length(wa_tc_tokens.token) = 0 \
        OR excluded.token_timestamp >= wa_tc_tokens.token_timestamp";

// ---------------------------------------------------------------------------------------------
// SignalStore
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl SignalStore for DbDeviceStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> StoreResult<()> {
        self.kv_put_async(K_IDENTITY, address.to_owned(), key.to_vec())
            .await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> StoreResult<()> {
        let rows = identities
            .iter()
            .map(|(a, k)| (a.to_string(), k.to_vec()))
            .collect();
        self.kv_put_batch_async(K_IDENTITY, rows).await
    }

    async fn load_identity(&self, address: &str) -> StoreResult<Option<[u8; 32]>> {
        self.kv_get_async(K_IDENTITY, address.to_owned())
            .await?
            .map(|b| identity_array(address, b))
            .transpose()
    }

    async fn delete_identity(&self, address: &str) -> StoreResult<()> {
        self.kv_delete_async(K_IDENTITY, address.to_owned()).await
    }

    async fn get_session(&self, address: &str) -> StoreResult<Option<Bytes>> {
        Ok(self
            .kv_get_async(K_SESSION, address.to_owned())
            .await?
            .map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> StoreResult<()> {
        self.kv_put_async(K_SESSION, address.to_owned(), session.to_vec())
            .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> StoreResult<()> {
        let rows = sessions
            .iter()
            .map(|(a, s)| (a.to_string(), s.to_vec()))
            .collect();
        self.kv_put_batch_async(K_SESSION, rows).await
    }

    async fn delete_session(&self, address: &str) -> StoreResult<()> {
        self.kv_delete_async(K_SESSION, address.to_owned()).await
    }

    async fn has_session(&self, address: &str) -> StoreResult<bool> {
        let key = address.to_owned();
        self.run(move |c, dev| kv_exists(c, dev, K_SESSION, &key))
            .await
    }

    async fn has_signal_state_for_user(&self, user: &str) -> StoreResult<bool> {
        let user = user.to_owned();
        self.run(move |c, dev| {
            use wa_store::dsl as s;
            let at = like_prefix(&format!("{user}@"));
            let colon = like_prefix(&format!("{user}:"));
            // LIKE narrows the scan (it is case-insensitive on SQLite); the exact test is here.
            let keys: Vec<String> = db_run!(c, |c| s::wa_store
                .filter(s::device_id.eq(dev))
                .filter(s::kind.eq_any([K_SESSION, K_IDENTITY]))
                .filter(
                    s::key
                        .like(&at)
                        .escape('\\')
                        .or(s::key.like(&colon).escape('\\'))
                )
                .select(s::key)
                .load::<String>(c))?;
            Ok(keys.iter().any(|k| {
                k.strip_prefix(user.as_str())
                    .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
            }))
        })
        .await
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> StoreResult<()> {
        let record = self.seal_prekey(id, record);
        self.run(move |c, dev| upsert_prekey(c, dev, id, &record, uploaded))
            .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<(u32, Vec<u8>)> = keys
            .iter()
            .map(|(id, r)| (*id, self.seal_prekey(*id, r)))
            .collect();
        self.run(move |c, dev| {
            c.transaction(|c| {
                for (id, record) in &keys {
                    upsert_prekey(c, dev, *id, record, uploaded)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn load_prekey(&self, id: u32) -> StoreResult<Option<Bytes>> {
        self.run(move |c, dev| {
            use wa_prekeys::dsl as p;
            Ok(db_run!(c, |c| p::wa_prekeys
                .find((dev, i64::from(id)))
                .select(p::record)
                .first::<Vec<u8>>(c)
                .optional())?)
        })
        .await?
        .map(|r| self.open_prekey(i64::from(id), r).map(Bytes::from))
        .transpose()
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> StoreResult<Vec<(u32, Bytes)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        let rows = self
            .run(move |c, dev| {
                use wa_prekeys::dsl as p;
                let mut found = Vec::new();
                for chunk in wanted.chunks(IN_CHUNK) {
                    let mut part = db_run!(c, |c| p::wa_prekeys
                        .filter(p::device_id.eq(dev).and(p::id.eq_any(chunk)))
                        .select((p::id, p::record))
                        .load::<(i64, Vec<u8>)>(c))?;
                    found.append(&mut part);
                }
                Ok(found)
            })
            .await?;
        let by_id: HashMap<i64, Bytes> = rows
            .into_iter()
            .map(|(id, r)| self.open_prekey(id, r).map(|r| (id, Bytes::from(r))))
            .collect::<StoreResult<_>>()?;
        // The caller's order; a repeated id is answered each time, like the default method.
        Ok(ids
            .iter()
            .filter_map(|&id| by_id.get(&i64::from(id)).map(|r| (id, r.clone())))
            .collect())
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        self.run(move |c, dev| {
            use wa_prekeys::dsl as p;
            // UPDATE only: a key consumed meanwhile must stay deleted.
            for chunk in ids.chunks(IN_CHUNK) {
                db_run!(c, |c| diesel::update(
                    p::wa_prekeys.filter(p::device_id.eq(dev).and(p::id.eq_any(chunk))),
                )
                .set(p::uploaded.eq(true))
                .execute(c))?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_prekey(&self, id: u32) -> StoreResult<()> {
        self.run(move |c, dev| {
            use wa_prekeys::dsl as p;
            db_run!(c, |c| diesel::delete(
                p::wa_prekeys.find((dev, i64::from(id)))
            )
            .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn get_max_prekey_id(&self) -> StoreResult<u32> {
        let max = self
            .run(move |c, dev| {
                use wa_prekeys::dsl as p;
                Ok(db_run!(c, |c| p::wa_prekeys
                    .filter(p::device_id.eq(dev))
                    .select(diesel::dsl::max(p::id))
                    .first::<Option<i64>>(c))?)
            })
            .await?;
        max.map_or(Ok(0), u32_id)
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> StoreResult<()> {
        self.kv_put_async(K_SIGNED_PREKEY, id.to_string(), record.to_vec())
            .await
    }

    async fn load_signed_prekey(&self, id: u32) -> StoreResult<Option<Vec<u8>>> {
        self.kv_get_async(K_SIGNED_PREKEY, id.to_string()).await
    }

    async fn load_all_signed_prekeys(&self) -> StoreResult<Vec<(u32, Vec<u8>)>> {
        let rows = self.run(|c, dev| kv_scan(c, dev, K_SIGNED_PREKEY)).await?;
        let mut out = rows
            .into_iter()
            .map(|(k, v)| {
                let id = k
                    .parse::<u32>()
                    .map_err(|_| StoreError::Validation(format!("bad signed prekey id {k:?}")))?;
                Ok((id, self.open_kv(K_SIGNED_PREKEY, &k, v)?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    async fn remove_signed_prekey(&self, id: u32) -> StoreResult<()> {
        self.kv_delete_async(K_SIGNED_PREKEY, id.to_string()).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> StoreResult<()> {
        self.kv_put_async(K_SENDER_KEY, address.to_owned(), record.to_vec())
            .await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> StoreResult<()> {
        let rows = sender_keys
            .iter()
            .map(|(a, r)| (a.to_string(), r.to_vec()))
            .collect();
        self.kv_put_batch_async(K_SENDER_KEY, rows).await
    }

    async fn get_sender_key(&self, address: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv_get_async(K_SENDER_KEY, address.to_owned()).await
    }

    async fn delete_sender_key(&self, address: &str) -> StoreResult<()> {
        self.kv_delete_async(K_SENDER_KEY, address.to_owned()).await
    }
}

// ---------------------------------------------------------------------------------------------
// AppSyncStore
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl AppSyncStore for DbDeviceStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> StoreResult<Option<AppStateSyncKey>> {
        self.kv_get_async(K_SYNC_KEY, hex::encode(key_id))
            .await?
            .map(|b| from_json(&b))
            .transpose()
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> StoreResult<()> {
        let id = key_id.to_vec();
        let value = self.seal_kv(K_SYNC_KEY, &hex::encode(&id), to_json(&key)?);
        self.run(move |c, dev| {
            c.transaction(|c| {
                kv_put(c, dev, K_SYNC_KEY, &hex::encode(&id), &value)?;
                kv_put(c, dev, K_SYNC_KEY_LATEST, "", &id)
            })
        })
        .await
    }

    async fn get_version(&self, name: &str) -> StoreResult<HashState> {
        match self.kv_get_async(K_APP_VERSION, name.to_owned()).await? {
            Some(b) => from_json(&b),
            None => Ok(HashState::default()),
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> StoreResult<()> {
        let value = to_json(&state)?;
        self.kv_put_async(K_APP_VERSION, name.to_owned(), value)
            .await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> StoreResult<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        let name = name.to_owned();
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let rows: Vec<(Vec<u8>, Vec<u8>)> = mutations
            .iter()
            .map(|m| (m.index_mac.clone(), m.value_mac.clone()))
            .collect();
        self.run(move |c, dev| {
            use wa_app_state_macs::dsl as m;
            c.transaction(|c| {
                for (index_mac, value_mac) in &rows {
                    db_run!(c, |c| diesel::insert_into(m::wa_app_state_macs)
                        .values((
                            m::device_id.eq(dev),
                            m::collection.eq(&name),
                            m::index_mac.eq(index_mac),
                            m::value_mac.eq(value_mac),
                            m::version.eq(version),
                        ))
                        .on_conflict((m::device_id, m::collection, m::index_mac))
                        .do_update()
                        .set((
                            m::value_mac.eq(excluded(m::value_mac)),
                            m::version.eq(excluded(m::version)),
                        ))
                        .execute(c))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let name = name.to_owned();
        let index_mac = index_mac.to_vec();
        self.run(move |c, dev| {
            use wa_app_state_macs::dsl as m;
            Ok(db_run!(c, |c| m::wa_app_state_macs
                .find((dev, name.as_str(), index_mac.as_slice()))
                .select(m::value_mac)
                .first::<Vec<u8>>(c)
                .optional())?)
        })
        .await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> StoreResult<HashMap<[u8; 32], Vec<u8>>> {
        if index_macs.is_empty() {
            return Ok(HashMap::new());
        }
        let name = name.to_owned();
        let wanted: Vec<Vec<u8>> = index_macs.iter().map(|m| m.to_vec()).collect();
        let rows = self
            .run(move |c, dev| {
                use wa_app_state_macs::dsl as m;
                let mut found = Vec::new();
                for chunk in wanted.chunks(IN_CHUNK) {
                    let mut part = db_run!(c, |c| m::wa_app_state_macs
                        .filter(m::device_id.eq(dev).and(m::collection.eq(&name)))
                        .filter(m::index_mac.eq_any(chunk))
                        .select((m::index_mac, m::value_mac))
                        .load::<(Vec<u8>, Vec<u8>)>(c))?;
                    found.append(&mut part);
                }
                Ok(found)
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(i, v)| <[u8; 32]>::try_from(i.as_slice()).ok().map(|i| (i, v)))
            .collect())
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> StoreResult<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        let name = name.to_owned();
        let macs = index_macs.to_vec();
        self.run(move |c, dev| {
            use wa_app_state_macs::dsl as m;
            c.transaction(|c| {
                for chunk in macs.chunks(IN_CHUNK) {
                    db_run!(c, |c| diesel::delete(
                        m::wa_app_state_macs
                            .filter(m::device_id.eq(dev).and(m::collection.eq(&name)))
                            .filter(m::index_mac.eq_any(chunk)),
                    )
                    .execute(c))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn clear_mutation_macs(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.run(move |c, dev| {
            use wa_app_state_macs::dsl as m;
            db_run!(c, |c| diesel::delete(
                m::wa_app_state_macs.filter(m::device_id.eq(dev).and(m::collection.eq(&name))),
            )
            .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn get_latest_sync_key_id(&self) -> StoreResult<Option<Vec<u8>>> {
        self.kv_get_async(K_SYNC_KEY_LATEST, String::new()).await
    }
}

// ---------------------------------------------------------------------------------------------
// ProtocolStore
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl ProtocolStore for DbDeviceStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> StoreResult<Vec<(String, bool)>> {
        let group = group_jid.to_owned();
        self.run(move |c, dev| {
            use wa_sender_key_devices::dsl as d;
            Ok(db_run!(c, |c| d::wa_sender_key_devices
                .filter(d::device_id.eq(dev).and(d::group_jid.eq(&group)))
                .order(d::device_jid)
                .select((d::device_jid, d::has_key))
                .load::<(String, bool)>(c))?)
        })
        .await
    }

    async fn set_sender_key_status(
        &self,
        group_jid: &str,
        entries: &[(&str, bool)],
    ) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let group = group_jid.to_owned();
        let entries: Vec<(String, bool)> =
            entries.iter().map(|(j, h)| ((*j).to_owned(), *h)).collect();
        self.run(move |c, dev| {
            use wa_sender_key_devices::dsl as d;
            c.transaction(|c| {
                for (device_jid, has_key) in &entries {
                    db_run!(c, |c| diesel::insert_into(d::wa_sender_key_devices)
                        .values((
                            d::device_id.eq(dev),
                            d::group_jid.eq(&group),
                            d::device_jid.eq(device_jid),
                            d::has_key.eq(*has_key),
                        ))
                        .on_conflict((d::device_id, d::group_jid, d::device_jid))
                        .do_update()
                        .set(d::has_key.eq(excluded(d::has_key)))
                        .execute(c))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> StoreResult<()> {
        let group = group_jid.to_owned();
        self.run(move |c, dev| {
            use wa_sender_key_devices::dsl as d;
            db_run!(c, |c| diesel::delete(
                d::wa_sender_key_devices.filter(d::device_id.eq(dev).and(d::group_jid.eq(&group))),
            )
            .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> StoreResult<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let jids: Vec<String> = device_jids.iter().map(|j| (*j).to_owned()).collect();
        self.run(move |c, dev| {
            use wa_sender_key_devices::dsl as d;
            c.transaction(|c| {
                for chunk in jids.chunks(IN_CHUNK) {
                    db_run!(c, |c| diesel::delete(
                        d::wa_sender_key_devices
                            .filter(d::device_id.eq(dev).and(d::device_jid.eq_any(chunk))),
                    )
                    .execute(c))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn clear_all_sender_key_devices(&self) -> StoreResult<()> {
        self.run(move |c, dev| {
            use wa_sender_key_devices::dsl as d;
            db_run!(c, |c| diesel::delete(
                d::wa_sender_key_devices.filter(d::device_id.eq(dev))
            )
            .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn get_lid_mapping(&self, lid: &str) -> StoreResult<Option<LidPnMappingEntry>> {
        let lid = lid.to_owned();
        let row = self
            .run(move |c, dev| {
                use wa_lid_mappings::dsl as l;
                Ok(db_run!(c, |c| l::wa_lid_mappings
                    .find((dev, lid.as_str()))
                    .select((
                        l::lid,
                        l::phone_number,
                        l::created_at,
                        l::updated_at,
                        l::learning_source
                    ))
                    .first::<LidRow>(c)
                    .optional())?)
            })
            .await?;
        Ok(row.map(lid_entry))
    }

    async fn get_pn_mapping(&self, phone: &str) -> StoreResult<Option<LidPnMappingEntry>> {
        let phone = phone.to_owned();
        let row = self
            .run(move |c, dev| {
                use wa_lid_mappings::dsl as l;
                Ok(db_run!(c, |c| l::wa_lid_mappings
                    .filter(l::device_id.eq(dev).and(l::phone_number.eq(&phone)))
                    .order((l::updated_at.desc(), l::created_at.desc(), l::lid.desc()))
                    .select((
                        l::lid,
                        l::phone_number,
                        l::created_at,
                        l::updated_at,
                        l::learning_source
                    ))
                    .first::<LidRow>(c)
                    .optional())?)
            })
            .await?;
        Ok(row.map(lid_entry))
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.run(move |c, dev| upsert_lid_mapping(c, dev, &entry))
            .await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries.to_vec();
        self.run(move |c, dev| {
            c.transaction(|c| {
                for e in &entries {
                    upsert_lid_mapping(c, dev, e)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn get_all_lid_mappings(&self) -> StoreResult<Vec<LidPnMappingEntry>> {
        let rows = self
            .run(move |c, dev| {
                use wa_lid_mappings::dsl as l;
                Ok(db_run!(c, |c| l::wa_lid_mappings
                    .filter(l::device_id.eq(dev))
                    .order(l::lid)
                    .select((
                        l::lid,
                        l::phone_number,
                        l::created_at,
                        l::updated_at,
                        l::learning_source
                    ))
                    .load::<LidRow>(c))?)
            })
            .await?;
        Ok(rows.into_iter().map(lid_entry).collect())
    }

    async fn save_base_key(
        &self,
        address: &str,
        message_id: &str,
        base_key: &[u8],
    ) -> StoreResult<()> {
        self.kv_put_async(
            K_BASE_KEY,
            composite_key(&[address, message_id]),
            base_key.to_vec(),
        )
        .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> StoreResult<bool> {
        let stored = self
            .kv_get_async(K_BASE_KEY, composite_key(&[address, message_id]))
            .await?;
        Ok(stored.is_some_and(|s| s == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> StoreResult<()> {
        self.kv_delete_async(K_BASE_KEY, composite_key(&[address, message_id]))
            .await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> StoreResult<()> {
        let value = to_json(&record)?;
        self.kv_put_async(K_DEVICE_LIST, record.user, value).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> StoreResult<()> {
        let rows = records
            .into_iter()
            .map(|r| to_json(&r).map(|v| (r.user, v)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.kv_put_batch_async(K_DEVICE_LIST, rows).await
    }

    async fn get_devices(&self, user: &str) -> StoreResult<Option<DeviceListRecord>> {
        self.kv_get_async(K_DEVICE_LIST, user.to_owned())
            .await?
            .map(|b| from_json(&b))
            .transpose()
    }

    async fn delete_devices(&self, user: &str) -> StoreResult<()> {
        self.kv_delete_async(K_DEVICE_LIST, user.to_owned()).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv_get_async(K_GROUP_METADATA, group_jid.to_owned())
            .await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> StoreResult<()> {
        self.kv_put_async(K_GROUP_METADATA, group_jid.to_owned(), blob.to_vec())
            .await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> StoreResult<()> {
        self.kv_delete_async(K_GROUP_METADATA, group_jid.to_owned())
            .await
    }

    async fn get_tc_token(&self, jid: &str) -> StoreResult<Option<TcTokenEntry>> {
        let jid = jid.to_owned();
        let row = self
            .run(move |c, dev| {
                use wa_tc_tokens::dsl as t;
                Ok(db_run!(c, |c| t::wa_tc_tokens
                    .find((dev, jid.as_str()))
                    .select((t::token, t::token_timestamp, t::sender_timestamp))
                    .first::<(Vec<u8>, i64, Option<i64>)>(c)
                    .optional())?)
            })
            .await?;
        Ok(
            row.map(|(token, token_timestamp, sender_timestamp)| TcTokenEntry {
                token,
                token_timestamp,
                sender_timestamp,
            }),
        )
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> StoreResult<()> {
        let jid = jid.to_owned();
        let entry = entry.clone();
        self.run(move |c, dev| {
            use wa_tc_tokens::dsl as t;
            db_run!(c, |c| diesel::insert_into(t::wa_tc_tokens)
                .values((
                    t::device_id.eq(dev),
                    t::jid.eq(&jid),
                    t::token.eq(&entry.token),
                    t::token_timestamp.eq(entry.token_timestamp),
                    t::sender_timestamp.eq(entry.sender_timestamp),
                ))
                .on_conflict((t::device_id, t::jid))
                .do_update()
                .set((
                    t::token.eq(excluded(t::token)),
                    t::token_timestamp.eq(excluded(t::token_timestamp)),
                    t::sender_timestamp.eq(excluded(t::sender_timestamp)),
                ))
                .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn delete_tc_token(&self, jid: &str) -> StoreResult<()> {
        let jid = jid.to_owned();
        self.run(move |c, dev| {
            use wa_tc_tokens::dsl as t;
            db_run!(c, |c| diesel::delete(
                t::wa_tc_tokens.find((dev, jid.as_str()))
            )
            .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn get_all_tc_token_jids(&self) -> StoreResult<Vec<String>> {
        self.run(move |c, dev| {
            use wa_tc_tokens::dsl as t;
            Ok(db_run!(c, |c| t::wa_tc_tokens
                .filter(t::device_id.eq(dev))
                .order(t::jid)
                .select(t::jid)
                .load::<String>(c))?)
        })
        .await
    }

    async fn delete_expired_tc_tokens(
        &self,
        token_cutoff: i64,
        sender_cutoff: i64,
    ) -> StoreResult<u32> {
        let n = self
            .run(move |c, dev| {
                use wa_tc_tokens::dsl as t;
                // Dropped only when both the received token and the sender bucket are stale.
                let token_dead = length(t::token)
                    .eq(0)
                    .or(t::token_timestamp.lt(token_cutoff));
                let sender_dead = t::sender_timestamp
                    .is_null()
                    .or(t::sender_timestamp.lt(sender_cutoff));
                Ok(db_run!(c, |c| diesel::delete(
                    t::wa_tc_tokens
                        .filter(t::device_id.eq(dev))
                        .filter(token_dead)
                        .filter(sender_dead),
                )
                .execute(c))?)
            })
            .await?;
        Ok(count_u32(n))
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> StoreResult<()> {
        let jid = jid.to_owned();
        self.run(move |c, dev| {
            let sql = portable_sql(c, TOUCH_TC_SENDER).into_owned();
            db_run!(c, |c| diesel::sql_query(&sql)
                .bind::<Text, _>(dev)
                .bind::<Text, _>(&jid)
                .bind::<Binary, _>(Vec::<u8>::new())
                .bind::<BigInt, _>(sender_timestamp)
                .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> StoreResult<()> {
        let jid = jid.to_owned();
        let token = token.to_vec();
        self.run(move |c, dev| {
            let sql = portable_sql(c, STORE_RECEIVED_TC).into_owned();
            db_run!(c, |c| diesel::sql_query(&sql)
                .bind::<Text, _>(dev)
                .bind::<Text, _>(&jid)
                .bind::<Binary, _>(&token)
                .bind::<BigInt, _>(token_timestamp)
                .execute(c))?;
            Ok(())
        })
        .await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> StoreResult<()> {
        self.kv_put_async(
            K_SENT_MESSAGE,
            composite_key(&[chat_jid, message_id]),
            payload.to_vec(),
        )
        .await
    }

    async fn take_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        let key = composite_key(&[chat_jid, message_id]);
        self.run(move |c, dev| {
            use wa_store::dsl as s;
            // DELETE … RETURNING: two concurrent retries cannot both take it.
            Ok(db_run!(c, |c| diesel::delete(s::wa_store.find((
                dev,
                K_SENT_MESSAGE,
                key.as_str()
            )))
            .returning(s::value)
            .get_result::<Vec<u8>>(c)
            .optional())?)
        })
        .await
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> StoreResult<u32> {
        let cutoff = secs_to_ms(cutoff_timestamp);
        let n = self
            .run(move |c, dev| kv_expire(c, dev, K_SENT_MESSAGE, cutoff))
            .await?;
        Ok(count_u32(n))
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> StoreResult<()> {
        self.kv_put_async(
            K_PENDING_INBOUND,
            composite_key(&[chat, sender, id]),
            message.to_vec(),
        )
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.kv_get_async(K_PENDING_INBOUND, composite_key(&[chat, sender, id]))
            .await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> StoreResult<()> {
        self.kv_delete_async(K_PENDING_INBOUND, composite_key(&[chat, sender, id]))
            .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> StoreResult<u32> {
        let cutoff = secs_to_ms(cutoff_timestamp);
        let n = self
            .run(move |c, dev| kv_expire(c, dev, K_PENDING_INBOUND, cutoff))
            .await?;
        Ok(count_u32(n))
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> StoreResult<()> {
        let rows = rows
            .iter()
            .map(|r| (composite_key(&[r.chat, r.sender, r.id]), r.message.to_vec()))
            .collect();
        self.kv_put_batch_async(K_PENDING_INBOUND, rows).await
    }

    async fn delete_pending_inbound_batch(
        &self,
        keys: &[PendingInboundKey<'_>],
    ) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys
            .iter()
            .map(|k| composite_key(&[k.chat, k.sender, k.id]))
            .collect();
        self.run(move |c, dev| {
            use wa_store::dsl as s;
            c.transaction(|c| {
                for chunk in keys.chunks(IN_CHUNK) {
                    db_run!(c, |c| diesel::delete(
                        s::wa_store
                            .filter(s::device_id.eq(dev).and(s::kind.eq(K_PENDING_INBOUND)))
                            .filter(s::key.eq_any(chunk)),
                    )
                    .execute(c))?;
                }
                Ok(())
            })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// MsgSecretStore
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl MsgSecretStore for DbDeviceStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> StoreResult<usize> {
        let stored = entries.len();
        if entries.is_empty() {
            return Ok(0);
        }
        let sealed: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| {
                let aad = secret_aad(&self.device_id, &e.chat, &e.sender, &e.msg_id);
                self.seal.seal(&aad, &e.secret)
            })
            .collect();
        self.run(move |c, dev| {
            c.transaction(|c| {
                let sql = portable_sql(c, UPSERT_MSG_SECRET).into_owned();
                // One statement per row: a repeated key within the batch merges like any other.
                for (e, secret) in entries.iter().zip(&sealed) {
                    db_run!(c, |c| diesel::sql_query(&sql)
                        .bind::<Text, _>(dev)
                        .bind::<Text, _>(&*e.chat)
                        .bind::<Text, _>(&*e.sender)
                        .bind::<Text, _>(&*e.msg_id)
                        .bind::<Binary, _>(&secret[..])
                        .bind::<BigInt, _>(e.expires_at)
                        .bind::<BigInt, _>(e.message_ts)
                        .execute(c))?;
                }
                Ok(())
            })
        })
        .await?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> StoreResult<Option<(Vec<u8>, i64)>> {
        let aad = secret_aad(&self.device_id, chat, sender, msg_id);
        let (chat, sender, msg_id) = (chat.to_owned(), sender.to_owned(), msg_id.to_owned());
        self.run(move |c, dev| {
            use wa_msg_secrets::dsl as m;
            Ok(db_run!(c, |c| m::wa_msg_secrets
                .find((dev, chat.as_str(), sender.as_str(), msg_id.as_str()))
                .select((m::secret, m::message_ts))
                .first::<(Vec<u8>, i64)>(c)
                .optional())?)
        })
        .await?
        .map(|(secret, ts)| {
            unseal(&self.seal, &aad, secret)
                .map(|s| (s, ts))
                .map_err(store_err)
        })
        .transpose()
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> StoreResult<u32> {
        let n = self
            .run(move |c, dev| {
                use wa_msg_secrets::dsl as m;
                Ok(db_run!(c, |c| diesel::delete(
                    m::wa_msg_secrets
                        .filter(m::device_id.eq(dev))
                        .filter(m::expires_at.ne(0))
                        .filter(m::expires_at.le(cutoff_timestamp)),
                )
                .execute(c))?)
            })
            .await?;
        Ok(count_u32(n))
    }
}

// ---------------------------------------------------------------------------------------------
// DeviceStore
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl DeviceStore for DbDeviceStore {
    async fn save(&self, device: &Device) -> StoreResult<()> {
        let value = to_json(device)?;
        self.kv_put_async(K_DEVICE, String::new(), value).await
    }

    async fn load(&self) -> StoreResult<Option<Device>> {
        self.kv_get_async(K_DEVICE, String::new())
            .await?
            .map(|b| from_json(&b))
            .transpose()
    }

    async fn exists(&self) -> StoreResult<bool> {
        self.run(|c, dev| kv_exists(c, dev, K_DEVICE, "")).await
    }

    /// Persists a fresh `Device` (new identity and noise keys) unless one exists, so the keys
    /// shown in the first QR code are the keys a restart finds. The store has one device per
    /// session, so the "generated id" is always 1.
    async fn create(&self) -> StoreResult<i32> {
        let fresh = self.seal_kv(K_DEVICE, "", to_json(&Device::new())?);
        self.run(move |c, dev| {
            use wa_store::dsl as s;
            db_run!(c, |c| diesel::insert_into(s::wa_store)
                .values((
                    s::device_id.eq(dev),
                    s::kind.eq(K_DEVICE),
                    s::key.eq(""),
                    s::value.eq(&fresh),
                    s::updated_at.eq(now_ms()),
                ))
                .on_conflict_do_nothing()
                .execute(c))?;
            Ok(())
        })
        .await?;
        Ok(1)
    }

    /// The data lives in the database, not in this process.
    async fn resource_report(&self) -> StorageResourceReport {
        StorageResourceReport {
            memory_bytes: Some(0),
            ..StorageResourceReport::default()
        }
    }
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
