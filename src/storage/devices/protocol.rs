//! whatsapp-rust's `ProtocolStore`: sender-key device lists, LID ↔ phone-number mappings,
//! base keys, device lists, group metadata, tc tokens, sent messages kept for retries and
//! pending inbound payloads.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Text};
use diesel::upsert::excluded;
use whatsapp_rust::wacore::store::error::Result as StoreResult;
use whatsapp_rust::wacore::store::traits::{
    DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow, ProtocolStore,
    TcTokenEntry,
};

use super::*;

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

const TOUCH_TC_SENDER: &str = include_str!("../sql/tc_token_touch_sender.sql");
const STORE_RECEIVED_TC: &str = include_str!("../sql/tc_token_store_received.sql");

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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| upsert_lid_mapping(c, dev, &entry))
            .await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries.to_vec();
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
            let sql = c.portable_sql(TOUCH_TC_SENDER);
            db_run!(c, |c| diesel::sql_query(sql.as_ref())
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
        self.write(move |c, dev| {
            let sql = c.portable_sql(STORE_RECEIVED_TC);
            db_run!(c, |c| diesel::sql_query(sql.as_ref())
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
        self.write(move |c, dev| {
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
        self.write(move |c, dev| {
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
