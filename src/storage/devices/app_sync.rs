//! whatsapp-rust's `AppSyncStore`: app-state sync keys, collection versions and the
//! mutation MACs of each collection (`wa_app_state_macs`).

use std::collections::HashMap;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::upsert::excluded;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::error::Result as StoreResult;
use whatsapp_rust::wacore::store::traits::{AppStateSyncKey, AppSyncStore};

use super::*;

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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
