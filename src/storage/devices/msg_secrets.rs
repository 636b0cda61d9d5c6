//! whatsapp-rust's `MsgSecretStore`: message secrets (`wa_msg_secrets`), sealed at rest,
//! merged on conflict and dropped after their expiry.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Text};
use whatsapp_rust::wacore::store::error::Result as StoreResult;
use whatsapp_rust::wacore::store::traits::{MsgSecretEntry, MsgSecretStore};

use super::sealing::secret_aad;
use super::*;

const UPSERT_MSG_SECRET: &str = include_str!("../sql/msg_secret_upsert.sql");

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
        self.write(move |c, dev| {
            c.transaction(|c| {
                let sql = c.portable_sql(UPSERT_MSG_SECRET);
                // One statement per row: a repeated key within the batch merges like any other.
                for (e, secret) in entries.iter().zip(&sealed) {
                    db_run!(c, |c| diesel::sql_query(sql.as_ref())
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
