//! whatsapp-rust's `SignalStore`: identities, Signal sessions, one-time and signed prekeys
//! and sender keys. The hot path of every message: each load is one primary-key lookup.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use diesel::prelude::*;
use diesel::upsert::excluded;
use whatsapp_rust::wacore::store::error::{Result as StoreResult, StoreError};
use whatsapp_rust::wacore::store::traits::SignalStore;

use super::*;

fn identity_array(address: &str, bytes: Vec<u8>) -> StoreResult<[u8; 32]> {
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        StoreError::Validation(format!(
            "identity key of {address} has {} bytes, expected 32",
            bytes.len()
        ))
    })
}

fn u32_id(id: i64) -> StoreResult<u32> {
    u32::try_from(id).map_err(|_| StoreError::Validation(format!("id out of range: {id}")))
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
        self.write(move |c, dev| upsert_prekey(c, dev, id, &record, uploaded))
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
