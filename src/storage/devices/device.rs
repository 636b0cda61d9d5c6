//! whatsapp-rust's `DeviceStore`: the session's one `Device` record (identity and noise keys,
//! the paired account), sealed at rest.

use async_trait::async_trait;
use diesel::prelude::*;
use whatsapp_rust::wacore::stats::StorageResourceReport;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::Result as StoreResult;
use whatsapp_rust::wacore::store::traits::DeviceStore;

use super::*;

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
        self.write_durable(move |c, dev| {
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
