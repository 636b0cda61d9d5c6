//! Secrets at rest: the SQLite files are owner-only, the device store's private key material
//! is sealed with the master key (a database dump or backup alone cannot clone a linked
//! account), and databases written before sealing are sealed at start without a new QR.

use diesel::prelude::*;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceStore, MsgSecretStore, SignalStore,
};

use wagate::crypto::{MasterKey, SealKey};
use wagate::db_run;
use wagate::proto::v1::SessionState;
use wagate::storage::Db;
use wagate::storage::devices::{self, DbDeviceStore};
use wagate::storage::schema::{wa_msg_secrets, wa_prekeys, wa_store};

use crate::device_store::{fill, fixture, snapshot};
use crate::on_both_backends;
use crate::support::session::wait_state;
use crate::support::{TestApp, TestDb};

on_both_backends!(
    private_keys_are_not_stored_in_plain,
    plain_rows_from_before_sealing_load_and_get_sealed,
    linked_session_survives_the_sealing_migration,
);

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One raw stored value: where it is, and its bytes as the database holds them.
#[derive(Debug)]
struct Raw {
    place: String,
    dev: String,
    kind: String,
    /// The row's key within its kind (prekey id, message id).
    key: String,
    bytes: Vec<u8>,
}

/// Every value of the three tables that hold private key material, read with plain SQL.
async fn raw_rows(db: &Db) -> Vec<Raw> {
    db.run(|c| {
        let kv: Vec<(String, String, String, Vec<u8>)> = db_run!(c, |c| wa_store::table
            .select((
                wa_store::device_id,
                wa_store::kind,
                wa_store::key,
                wa_store::value
            ))
            .load(c))?;
        let pk: Vec<(String, i64, Vec<u8>)> = db_run!(c, |c| wa_prekeys::table
            .select((wa_prekeys::device_id, wa_prekeys::id, wa_prekeys::record))
            .load(c))?;
        let ms: Vec<(String, String, Vec<u8>)> = db_run!(c, |c| wa_msg_secrets::table
            .select((
                wa_msg_secrets::device_id,
                wa_msg_secrets::msg_id,
                wa_msg_secrets::secret
            ))
            .load(c))?;
        let mut out: Vec<Raw> = kv
            .into_iter()
            .map(|(dev, kind, key, bytes)| Raw {
                place: format!("wa_store {dev} {kind} {key:?}"),
                dev,
                kind,
                key,
                bytes,
            })
            .collect();
        out.extend(pk.into_iter().map(|(dev, id, bytes)| Raw {
            place: format!("wa_prekeys {dev} {id}"),
            dev,
            kind: "prekey".into(),
            key: id.to_string(),
            bytes,
        }));
        out.extend(ms.into_iter().map(|(dev, id, bytes)| Raw {
            place: format!("wa_msg_secrets {dev} {id}"),
            dev,
            kind: "msg_secret".into(),
            key: id,
            bytes,
        }));
        Ok(out)
    })
    .await
    .unwrap()
}

const SECRET_KINDS: [&str; 7] = [
    "device",
    "session",
    "signed_prekey",
    "sender_key",
    "sync_key",
    "prekey",
    "msg_secret",
];

/// The private parts of a `Device`, as raw bytes and as the JSON number lists the plain
/// record spelled them with.
fn device_secrets(d: &Device) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for k in [
        d.noise_key.private_key.serialize().to_vec(),
        d.identity_key.private_key.serialize().to_vec(),
        d.signed_pre_key.private_key.serialize().to_vec(),
        d.adv_secret_key.to_vec(),
    ] {
        let json = serde_json::to_string(&k).unwrap();
        out.push(json.trim_end_matches(']').as_bytes().to_vec());
        out.push(k);
    }
    for field in [
        "noise_key",
        "identity_key",
        "signed_pre_key",
        "adv_secret_key",
    ] {
        out.push(field.as_bytes().to_vec());
    }
    out
}

/// Asserts no raw value contains any of `secrets`, and every secret-bearing value is sealed.
fn assert_sealed(rows: &[Raw], secrets: &[Vec<u8>]) {
    for r in rows {
        for s in secrets {
            assert!(
                !contains(&r.bytes, s),
                "{} holds {:?} in plain",
                r.place,
                String::from_utf8_lossy(s)
            );
        }
        if SECRET_KINDS.contains(&r.kind.as_str()) {
            assert!(SealKey::is_sealed(&r.bytes), "{} is not sealed", r.place);
        }
    }
}

/// The database files are created owner-only, and broader modes are tightened at open.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDb::sqlite();
    let mode = |suffix: &str| {
        std::fs::metadata(format!("{}{suffix}", t.url))
            .unwrap_or_else(|e| panic!("{}{suffix}: {e}", t.url))
            .permissions()
            .mode()
            & 0o777
    };
    let db = Db::open(&t.url, 2).unwrap();
    db.migrate().unwrap();
    let f = fixture(&t).await;
    let s = DbDeviceStore::new(f.db.clone(), &f.key, f.a.clone());
    s.create().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(mode(suffix), 0o600, "wagate.db{suffix}");
    }
    // The key file next to it is owner-only too.
    let args = wagate::config::DbArgs {
        database_url: t.url.clone(),
        master_key: None,
    };
    args.resolve_master_key().unwrap();
    assert_eq!(mode(".key"), 0o600, "wagate.db.key");

    // Files left readable by an older version are tightened when the database is opened.
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", t.url);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let again = Db::open(&t.url, 2).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(mode(suffix), 0o600, "wagate.db{suffix} after reopening");
    }
    drop((again, db, f));
}

/// After a device is created, paired and used, raw rows show none of its private keys, and
/// a sealed record opens only in its own place and with its own master key.
async fn private_keys_are_not_stored_in_plain(t: TestDb) {
    let f = fixture(&t).await;
    let a = DbDeviceStore::new(f.db.clone(), &f.key, f.a.clone());
    a.create().await.unwrap();
    let created = a.load().await.unwrap().unwrap();
    let mut paired = Device::new();
    paired.pn = Some("15550001:12@s.whatsapp.net".parse().unwrap());
    a.save(&paired).await.unwrap();
    fill(&a, 7).await;
    let secret = [0xA5; 32];
    a.put_msg_secret("c", "s", "M2", &secret).await.unwrap();
    a.store_prekeys_batch(&[(5, bytes::Bytes::from_static(b"batch-prekey"))], false)
        .await
        .unwrap();

    let mut secrets = device_secrets(&created);
    secrets.extend(device_secrets(&paired));
    for marker in [
        "session-7",
        "prekey-7",
        "spk-7",
        "sk-7",
        "sync-7",
        "batch-prekey",
    ] {
        secrets.push(marker.as_bytes().to_vec());
    }
    secrets.push(b"key_data".to_vec());
    secrets.push(secret.to_vec());
    let rows = raw_rows(&f.db).await;
    for kind in SECRET_KINDS {
        assert!(
            rows.iter().any(|r| r.kind == kind),
            "a {kind} row was written"
        );
    }
    assert_sealed(&rows, &secrets);
    assert_files_clean(&t, &secrets);

    // Everything reads back as written.
    let loaded = a.load().await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(&paired).unwrap()
    );
    let snap = snapshot(&a).await;
    assert_eq!(snap["session"], serde_json::json!(b"session-7".to_vec()));
    assert_eq!(snap["prekey"], serde_json::json!(b"prekey-7".to_vec()));
    assert_eq!(
        snap["sync"]["key_data"],
        serde_json::json!(b"sync-7".to_vec())
    );
    assert_eq!(
        a.get_msg_secret("c", "s", "M2").await.unwrap(),
        Some(secret.to_vec())
    );
    assert_eq!(
        a.load_prekeys_batch(&[5]).await.unwrap(),
        vec![(5, bytes::Bytes::from_static(b"batch-prekey"))]
    );

    // Another master key does not open them: an error, not garbage.
    let stranger = DbDeviceStore::new(f.db.clone(), &MasterKey::generate(), f.a.clone());
    assert!(stranger.load().await.is_err());
    assert!(
        stranger
            .get_session("15550001@s.whatsapp.net")
            .await
            .is_err()
    );
    // A sealed record copied into another session's row does not open there.
    let (from, to) = (f.a.clone(), f.b.clone());
    f.db.run(move |c| {
        let value: Vec<u8> = db_run!(c, |c| wa_store::table
            .find((&from, "device", ""))
            .select(wa_store::value)
            .first(c))?;
        db_run!(c, |c| diesel::insert_into(wa_store::table)
            .values((
                wa_store::device_id.eq(&to),
                wa_store::kind.eq("device"),
                wa_store::key.eq(""),
                wa_store::value.eq(&value),
                wa_store::updated_at.eq(0i64),
            ))
            .execute(c))?;
        Ok(())
    })
    .await
    .unwrap();
    let b = DbDeviceStore::new(f.db.clone(), &f.key, f.b.clone());
    assert!(b.load().await.is_err(), "a moved record must not open");
    // Nothing left to seal.
    let key = f.key.clone();
    let n =
        f.db.run(move |c| devices::seal_legacy_rows(c, &key))
            .await
            .unwrap();
    assert_eq!(n, 0);
}

/// Inserts the rows of one session the way wagate wrote them before sealing (plain bytes,
/// serde_json for the `Device` and app-state sync keys).
async fn insert_plain_rows(db: &Db, dev: &str, device: &Device) {
    let dev = dev.to_owned();
    let device_json = serde_json::to_vec(device).unwrap();
    let sync = serde_json::to_vec(&AppStateSyncKey {
        key_data: b"sync-old".to_vec(),
        fingerprint: vec![1],
        timestamp: 5,
    })
    .unwrap();
    db.run(move |c| {
        let kv: Vec<(&str, String, Vec<u8>)> = vec![
            ("device", String::new(), device_json),
            (
                "session",
                "15550001@s.whatsapp.net".into(),
                b"session-old".to_vec(),
            ),
            ("identity", "15550001@s.whatsapp.net".into(), vec![9; 32]),
            ("signed_prekey", "1".into(), b"spk-old".to_vec()),
            ("sender_key", "g::me".into(), b"sk-old".to_vec()),
            ("sync_key", hex::encode(b"kid"), sync),
            ("sync_key_latest", String::new(), b"kid".to_vec()),
        ];
        for (kind, key, value) in kv {
            db_run!(c, |c| diesel::insert_into(wa_store::table)
                .values((
                    wa_store::device_id.eq(&dev),
                    wa_store::kind.eq(kind),
                    wa_store::key.eq(&key),
                    wa_store::value.eq(&value),
                    wa_store::updated_at.eq(1i64),
                ))
                .execute(c))?;
        }
        db_run!(c, |c| diesel::insert_into(wa_prekeys::table)
            .values((
                wa_prekeys::device_id.eq(&dev),
                wa_prekeys::id.eq(3i64),
                wa_prekeys::record.eq(b"prekey-old".to_vec()),
                wa_prekeys::uploaded.eq(true),
            ))
            .execute(c))?;
        db_run!(c, |c| diesel::insert_into(wa_msg_secrets::table)
            .values((
                wa_msg_secrets::device_id.eq(&dev),
                wa_msg_secrets::chat.eq("c"),
                wa_msg_secrets::sender.eq("s"),
                wa_msg_secrets::msg_id.eq("M"),
                wa_msg_secrets::secret.eq(vec![0x5A; 32]),
                wa_msg_secrets::expires_at.eq(0i64),
                wa_msg_secrets::message_ts.eq(7i64),
            ))
            .execute(c))?;
        Ok(())
    })
    .await
    .unwrap();
}

/// What the plain rows of [`insert_plain_rows`] hold, read through the store.
async fn plain_state(s: &DbDeviceStore) -> serde_json::Value {
    serde_json::json!({
        "device": serde_json::to_value(s.load().await.unwrap()).unwrap(),
        "session": s.get_session("15550001@s.whatsapp.net").await.unwrap().map(|b| b.to_vec()),
        "identity": s.load_identity("15550001@s.whatsapp.net").await.unwrap(),
        "spk": s.load_all_signed_prekeys().await.unwrap(),
        "sk": s.get_sender_key("g::me").await.unwrap(),
        "sync": serde_json::to_value(s.get_sync_key(b"kid").await.unwrap()).unwrap(),
        "latest": s.get_latest_sync_key_id().await.unwrap(),
        "prekey": s.load_prekey(3).await.unwrap().map(|b| b.to_vec()),
        "secret": s.get_msg_secret_with_ts("c", "s", "M").await.unwrap(),
    })
}

/// A database from before sealing: its plain rows load as they are, the sealing pass seals
/// every one of them in place (once), and the device loads with the same keys afterwards.
async fn plain_rows_from_before_sealing_load_and_get_sealed(t: TestDb) {
    let f = fixture(&t).await;
    let mut device = Device::new();
    device.pn = Some("15550001:3@s.whatsapp.net".parse().unwrap());
    device.push_name = "Old".into();
    insert_plain_rows(&f.db, &f.a, &device).await;
    let s = DbDeviceStore::new(f.db.clone(), &f.key, f.a.clone());
    let before = plain_state(&s).await;
    assert_eq!(before["device"], serde_json::to_value(&device).unwrap());
    assert_eq!(
        before["session"],
        serde_json::json!(b"session-old".to_vec())
    );
    assert_eq!(before["secret"], serde_json::json!([vec![0x5A; 32], 7]));
    assert!(s.is_paired().await.unwrap());

    let key = f.key.clone();
    let sealed =
        f.db.run(move |c| devices::seal_legacy_rows(c, &key))
            .await
            .unwrap();
    assert_eq!(
        sealed, 7,
        "device, session, spk, sender key, sync key, prekey, secret"
    );
    let mut secrets = device_secrets(&device);
    for m in [
        "session-old",
        "spk-old",
        "sk-old",
        "sync-old",
        "prekey-old",
        "key_data",
    ] {
        secrets.push(m.as_bytes().to_vec());
    }
    secrets.push(vec![0x5A; 32]);
    let rows = raw_rows(&f.db).await;
    assert_sealed(&rows, &secrets);
    // Public and bookkeeping records stay as they were.
    let identity = rows.iter().find(|r| r.kind == "identity").unwrap();
    assert_eq!(identity.bytes, vec![9; 32]);

    // The same keys load after sealing, through the store and the session manager's helper.
    assert_eq!(plain_state(&s).await, before);
    let (dev, key) = (f.a.clone(), f.key.clone());
    let loaded =
        f.db.run(move |c| devices::load_device(c, &key, &dev))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        loaded.noise_key.private_key.serialize(),
        device.noise_key.private_key.serialize()
    );
    // Idempotent: a second start seals nothing and changes nothing.
    let key = f.key.clone();
    let again =
        f.db.run(move |c| devices::seal_legacy_rows(c, &key))
            .await
            .unwrap();
    assert_eq!(again, 0);
    let after: Vec<Vec<u8>> = raw_rows(&f.db).await.into_iter().map(|r| r.bytes).collect();
    assert_eq!(after, rows.into_iter().map(|r| r.bytes).collect::<Vec<_>>());

    // A copy of the SQLite files holds no leftover of the plain records either (freed cells
    // and old page versions in the WAL).
    assert_files_clean(&t, &secrets);
}

/// On SQLite: neither the database file nor its WAL contains any of `secrets`.
fn assert_files_clean(t: &TestDb, secrets: &[Vec<u8>]) {
    if t.is_postgres() {
        return;
    }
    for suffix in ["", "-wal"] {
        let file = std::fs::read(format!("{}{suffix}", t.url)).unwrap_or_default();
        for s in secrets {
            assert!(
                !contains(&file, s),
                "wagate.db{suffix} still holds {:?}",
                String::from_utf8_lossy(s)
            );
        }
    }
}

/// Rewrites every sealed record of session `dev` in the plain format of before sealing,
/// reading the plaintext through the store; returns how many rows it rewrote.
async fn unseal_to_plain(db: &Db, key: &MasterKey, dev: &str) -> usize {
    let s = DbDeviceStore::new(db.clone(), key, dev.to_owned());
    let mut plain: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    for r in raw_rows(db).await {
        // Message secrets need their chat and sender: left sealed (none exist right after
        // linking anyway).
        if !SECRET_KINDS.contains(&r.kind.as_str()) || r.dev != dev || r.kind == "msg_secret" {
            continue;
        }
        assert!(SealKey::is_sealed(&r.bytes), "{} is sealed", r.place);
        let k = r.key.clone();
        match r.kind.as_str() {
            "device" => {
                let d = s.load().await.unwrap().unwrap();
                plain.push(("device", String::new(), serde_json::to_vec(&d).unwrap()));
            }
            "session" | "sender_key" | "signed_prekey" | "sync_key" => {
                let v = match r.kind.as_str() {
                    "session" => s.get_session(&k).await.unwrap().unwrap().to_vec(),
                    "sender_key" => s.get_sender_key(&k).await.unwrap().unwrap(),
                    "signed_prekey" => s
                        .load_signed_prekey(k.parse().unwrap())
                        .await
                        .unwrap()
                        .unwrap(),
                    _ => serde_json::to_vec(
                        &s.get_sync_key(&hex::decode(&k).unwrap())
                            .await
                            .unwrap()
                            .unwrap(),
                    )
                    .unwrap(),
                };
                let kind = SECRET_KINDS.into_iter().find(|x| *x == r.kind).unwrap();
                plain.push((kind, k, v));
            }
            _ => {
                let id: u32 = k.parse().unwrap();
                let v = s.load_prekey(id).await.unwrap().unwrap().to_vec();
                plain.push(("prekey", k, v));
            }
        }
    }
    let n = plain.len();
    let dev = dev.to_owned();
    db.run(move |c| {
        for (kind, k, v) in plain {
            if kind == "prekey" {
                let id: i64 = k.parse().unwrap();
                db_run!(c, |c| diesel::update(wa_prekeys::table.find((&dev, id)))
                    .set(wa_prekeys::record.eq(&v))
                    .execute(c))?;
            } else {
                db_run!(c, |c| diesel::update(
                    wa_store::table.find((&dev, kind, &k))
                )
                .set(wa_store::value.eq(&v))
                .execute(c))?;
            }
        }
        Ok(())
    })
    .await
    .unwrap();
    n
}

/// A session linked at wasim whose store is turned back into the plain format of before
/// sealing connects again after a restart, with no QR, and its records are sealed then.
async fn linked_session_survives_the_sealing_migration(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(1)
        .node("node-1")
        .start()
        .await;
    let (p, s, key) = (t.project().clone(), t.session(0).clone(), t.key.clone());
    let phone = s.phone_number.as_str();
    let stopped = t.stop().await;

    let db = stopped.db().open();
    let rewritten = unseal_to_plain(&db, &key, &s.session_id).await;
    assert!(
        rewritten >= 3,
        "device, signed prekey, prekeys: {rewritten}"
    );
    let rows = raw_rows(&db).await;
    let device = rows.iter().find(|r| r.kind == "device").unwrap();
    assert!(contains(&device.bytes, b"noise_key"), "plain like before");
    drop(db);

    let t = stopped.node("node-2").start().await;
    let mut c = t.sessions_client().await;
    let back = wait_state(&mut c, &p, &s.session_id, SessionState::Connected, 20).await;
    assert_eq!(back.phone_number, phone);
    let db = t.db.open();
    let rows = raw_rows(&db).await;
    let loaded = devices::DbDeviceStore::new(db.clone(), &key, s.session_id.clone())
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_sealed(&rows, &device_secrets(&loaded));
    t.shutdown().await;
}
