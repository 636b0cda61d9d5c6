//! At-rest sealing of the device store: which records hold private key material, what each
//! sealed value is bound to (its table, session and key), and the one-time pass that seals
//! records written before sealing existed.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::{K_DEVICE, K_SENDER_KEY, K_SESSION, K_SIGNED_PREKEY, K_SYNC_KEY};
use super::{composite_key, length, substr};
use crate::crypto::{MasterKey, SealKey};
use crate::db_run;
use crate::error::Result;
use crate::storage::DbConn;
use crate::storage::schema::{wa_msg_secrets, wa_prekeys, wa_store};

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

pub(super) fn is_sealed_kind(kind: &str) -> bool {
    SEALED_KINDS.contains(&kind)
}

pub(super) fn seal_key(master: &MasterKey) -> SealKey {
    master.seal_key(SEAL_LABEL)
}

/// What a sealed `wa_store` value is bound to: its table, session, kind and key.
pub(super) fn kv_aad(dev: &str, kind: &str, key: &str) -> Vec<u8> {
    composite_key(&["wa_store", dev, kind, key]).into_bytes()
}

pub(super) fn prekey_aad(dev: &str, id: i64) -> Vec<u8> {
    composite_key(&["wa_prekeys", dev, &id.to_string()]).into_bytes()
}

pub(super) fn secret_aad(dev: &str, chat: &str, sender: &str, msg_id: &str) -> Vec<u8> {
    composite_key(&["wa_msg_secrets", dev, chat, sender, msg_id]).into_bytes()
}

/// The plaintext of a stored secret record: sealed ones are opened, a plain one is a record
/// written before sealing (kept readable until [`seal_legacy_rows`] seals it).
pub(super) fn unseal(key: &SealKey, aad: &[u8], stored: Vec<u8>) -> Result<Vec<u8>> {
    if SealKey::is_sealed(&stored) {
        key.open(aad, &stored)
    } else {
        Ok(stored)
    }
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
