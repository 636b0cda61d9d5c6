//! Conformance of the diesel-backed whatsapp-rust store, every Backend method, both backends.
//!
//! Every call is made on `DbDeviceStore` and on whatsapp-rust's own `InMemoryBackend` (the
//! reference implementation) with the same arguments, and the answers must agree; on top of
//! that: per-session isolation, persistence across a fresh `Db` handle, wipe, cascade on
//! device deletion, and the durability details the in-memory store does not model (prekey
//! `uploaded` flags, expiry clocks).

use bytes::Bytes;
use diesel::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use wagate::crypto::MasterKey;
use wagate::db_run;
use wagate::domain::admin::{Admin, NewProject};
use wagate::storage::devices::{self as device_store, DbDeviceStore};
use wagate::storage::schema::{devices, wa_prekeys};
use wagate::storage::{Db, now_ms};
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceInfo, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow, ProtocolStore,
    SignalStore, TcTokenEntry,
};
use whatsapp_rust::wacore::store::{Device, InMemoryBackend};

use crate::on_both_backends;
use crate::support::{TestDb, seed_project};

on_both_backends!(
    signal_store_matches_in_memory,
    app_sync_store_matches_in_memory,
    protocol_store_matches_in_memory,
    msg_secrets_sent_and_pending_match_in_memory,
    device_record_isolation_reopen_and_wipe,
    lid_cache_is_bounded_and_reads_evicted_mappings_from_the_store
);

pub(crate) struct Fixture {
    pub db: Db,
    /// The master key the stores seal with.
    pub key: MasterKey,
    /// Two sessions of one project.
    pub a: String,
    pub b: String,
}

pub(crate) async fn fixture(t: &TestDb) -> Fixture {
    let db = t.migrated();
    let key = MasterKey::generate();
    let project = NewProject {
        name: "store".into(),
        rate_limit_per_minute: 1000,
        monthly_quota: 1000,
        max_sessions: 10,
    };
    let devices = seed_project(&Admin::new(db.clone(), key.clone()), project, 2).await;
    let [a, b] = [&devices[0], &devices[1]].map(|d| d.device_id.clone());
    Fixture { db, key, a, b }
}

/// The store under test next to the reference.
struct Pair {
    db: DbDeviceStore,
    mem: InMemoryBackend,
}

impl Pair {
    fn new(f: &Fixture) -> Pair {
        Pair {
            db: DbDeviceStore::new(f.db.clone(), &f.key, f.a.clone()),
            mem: InMemoryBackend::new(),
        }
    }
}

/// Runs the same call on both stores, normalises the answers, asserts they agree and returns
/// the database's answer.
macro_rules! both {
    ($p:expr, $b:ident => $call:expr) => {
        both!($p, $b => $call, |r| r)
    };
    ($p:expr, $b:ident => $call:expr, $norm:expr) => {{
        let norm = $norm;
        let from_db = {
            let $b = &$p.db;
            norm($call.await.expect(concat!("db store: ", stringify!($call))))
        };
        let from_mem = {
            let $b = &$p.mem;
            norm($call.await.expect(concat!("in-memory store: ", stringify!($call))))
        };
        assert_eq!(from_db, from_mem, "stores disagree on {}", stringify!($call));
        from_db
    }};
}

fn json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn lid_key(v: Vec<LidPnMappingEntry>) -> Vec<serde_json::Value> {
    let mut v = v;
    v.sort_by(|a, b| a.lid.cmp(&b.lid));
    v.into_iter().map(json).collect()
}

fn mac_map(m: HashMap<[u8; 32], Vec<u8>>) -> Vec<([u8; 32], Vec<u8>)> {
    sorted(m.into_iter().collect())
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

async fn signal_store_matches_in_memory(t: TestDb) {
    let f = fixture(&t).await;
    let p = Pair::new(&f);
    let alice = "15550001@s.whatsapp.net";
    let alice3 = "15550001:3@s.whatsapp.net";
    let alice_lid = "100000001:7@lid";

    // Identities.
    assert_eq!(both!(p, s => s.load_identity(alice)), None);
    both!(p, s => s.put_identity(alice, [1; 32]));
    assert_eq!(both!(p, s => s.load_identity(alice)), Some([1; 32]));
    both!(p, s => s.put_identity(alice, [2; 32]));
    assert_eq!(both!(p, s => s.load_identity(alice)), Some([2; 32]));
    let batch: Vec<(Arc<str>, [u8; 32])> = vec![(alice3.into(), [3; 32]), (alice.into(), [4; 32])];
    both!(p, s => s.put_identities_batch(&batch));
    assert_eq!(both!(p, s => s.load_identity(alice)), Some([4; 32]));
    assert_eq!(both!(p, s => s.load_identity(alice3)), Some([3; 32]));
    both!(p, s => s.delete_identity(alice));
    assert_eq!(both!(p, s => s.load_identity(alice)), None);
    both!(p, s => s.delete_identity("nobody@s.whatsapp.net"));

    // Sessions.
    assert_eq!(both!(p, s => s.get_session(alice)), None);
    assert!(!both!(p, s => s.has_session(alice)));
    both!(p, s => s.put_session(alice, b"session-1"));
    assert_eq!(
        both!(p, s => s.get_session(alice)),
        Some(Bytes::from_static(b"session-1"))
    );
    assert!(both!(p, s => s.has_session(alice)));
    let sessions: Vec<(Arc<str>, Bytes)> = vec![
        (alice.into(), Bytes::from_static(b"session-2")),
        (alice_lid.into(), Bytes::from_static(b"lid-session")),
        (alice_lid.into(), Bytes::from_static(b"lid-session-2")),
    ];
    both!(p, s => s.put_sessions_batch(&sessions));
    assert_eq!(
        both!(p, s => s.get_session(alice)),
        Some(Bytes::from_static(b"session-2"))
    );
    assert_eq!(
        both!(p, s => s.get_session(alice_lid)),
        Some(Bytes::from_static(b"lid-session-2")),
        "the last write of a key within a batch wins"
    );
    both!(p, s => s.put_sessions_batch(&[]));

    // has_signal_state_for_user: sessions or identities, device 0 or any device, exact user.
    for user in ["15550001", "100000001", "1555000", "155500011", "nobody"] {
        both!(p, s => s.has_signal_state_for_user(user));
    }
    assert!(both!(p, s => s.has_signal_state_for_user("100000001")));
    assert!(!both!(p, s => s.has_signal_state_for_user("1555000")));
    // LIKE wildcards and case must not leak into the match.
    both!(p, s => s.put_session("ab%cd@lid", b"x"));
    both!(p, s => s.put_identity("AXB@lid", [9; 32]));
    for user in ["ab%cd", "ab", "a_b", "axb", "AXB", "a%"] {
        both!(p, s => s.has_signal_state_for_user(user));
    }
    assert!(both!(p, s => s.has_signal_state_for_user("AXB")));
    assert!(!both!(p, s => s.has_signal_state_for_user("axb")));
    assert!(!both!(p, s => s.has_signal_state_for_user("A_B")));
    both!(p, s => s.delete_session(alice));
    assert_eq!(both!(p, s => s.get_session(alice)), None);
    assert!(!both!(p, s => s.has_session(alice)));
    // Only the identity of alice3 is left for that user.
    assert!(both!(p, s => s.has_signal_state_for_user("15550001")));
    both!(p, s => s.delete_identity(alice3));
    assert!(!both!(p, s => s.has_signal_state_for_user("15550001")));

    // One-time prekeys.
    assert_eq!(both!(p, s => s.get_max_prekey_id()), 0);
    assert_eq!(both!(p, s => s.load_prekey(1)), None);
    both!(p, s => s.store_prekey(1, b"pk1", false));
    both!(p, s => s.store_prekey(1, b"pk1b", false));
    assert_eq!(
        both!(p, s => s.load_prekey(1)),
        Some(Bytes::from_static(b"pk1b"))
    );
    let keys: Vec<(u32, Bytes)> = (2..=40)
        .map(|i| (i, Bytes::from(format!("pk{i}").into_bytes())))
        .collect();
    both!(p, s => s.store_prekeys_batch(&keys, false));
    both!(p, s => s.store_prekey(u32::MAX - 1, b"high", true));
    assert_eq!(both!(p, s => s.get_max_prekey_id()), u32::MAX - 1);
    both!(p, s => s.remove_prekey(u32::MAX - 1));
    assert_eq!(both!(p, s => s.get_max_prekey_id()), 40);
    let wanted = [7, 3, 999, 40, 3, 1];
    let loaded = both!(p, s => s.load_prekeys_batch(&wanted));
    assert_eq!(
        loaded.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [7, 3, 40, 3, 1]
    );
    assert_eq!(loaded[0].1, Bytes::from_static(b"pk7"));
    assert!(both!(p, s => s.load_prekeys_batch(&[])).is_empty());
    both!(p, s => s.remove_prekey(5));
    both!(p, s => s.mark_prekeys_uploaded(&[4, 5, 6]));
    assert_eq!(
        both!(p, s => s.load_prekey(5)),
        None,
        "marking uploaded must not resurrect a consumed key"
    );
    assert_eq!(
        both!(p, s => s.load_prekey(4)),
        Some(Bytes::from_static(b"pk4"))
    );
    // The in-memory store does not model the flag; the database must.
    let mut conn = f.db.get().unwrap();
    let flags: Vec<(i64, bool)> = db_run!(&mut *conn, |c| wa_prekeys::table
        .filter(wa_prekeys::device_id.eq(&f.a))
        .filter(wa_prekeys::id.le(7))
        .order(wa_prekeys::id)
        .select((wa_prekeys::id, wa_prekeys::uploaded))
        .load(c))
    .unwrap();
    assert_eq!(
        flags,
        [
            (1, false),
            (2, false),
            (3, false),
            (4, true),
            (6, true),
            (7, false)
        ]
    );
    drop(conn);
    both!(p, s => s.store_prekey(4, b"pk4-again", false));
    let mut conn = f.db.get().unwrap();
    let flag4: bool = db_run!(&mut *conn, |c| wa_prekeys::table
        .find((&f.a, 4i64))
        .select(wa_prekeys::uploaded)
        .first(c))
    .unwrap();
    assert!(!flag4, "re-storing a prekey stores its new uploaded flag");
    drop(conn);

    // Signed prekeys.
    assert_eq!(both!(p, s => s.load_signed_prekey(1)), None);
    assert!(both!(p, s => s.load_all_signed_prekeys()).is_empty());
    both!(p, s => s.store_signed_prekey(10, b"spk10"));
    both!(p, s => s.store_signed_prekey(2, b"spk2"));
    both!(p, s => s.store_signed_prekey(10, b"spk10b"));
    assert_eq!(
        both!(p, s => s.load_signed_prekey(10)),
        Some(b"spk10b".to_vec())
    );
    assert_eq!(
        both!(p, s => s.load_all_signed_prekeys(), sorted),
        [(2, b"spk2".to_vec()), (10, b"spk10b".to_vec())]
    );
    both!(p, s => s.remove_signed_prekey(2));
    assert_eq!(both!(p, s => s.load_all_signed_prekeys(), sorted).len(), 1);

    // Sender keys.
    let sk = "120363000000000001@g.us::15550001:3@s.whatsapp.net";
    assert_eq!(both!(p, s => s.get_sender_key(sk)), None);
    both!(p, s => s.put_sender_key(sk, b"sk1"));
    assert_eq!(both!(p, s => s.get_sender_key(sk)), Some(b"sk1".to_vec()));
    let batch: Vec<(Arc<str>, Bytes)> = vec![
        (sk.into(), Bytes::from_static(b"sk2")),
        ("g2::me".into(), Bytes::from_static(b"other")),
    ];
    both!(p, s => s.put_sender_keys_batch(&batch));
    assert_eq!(both!(p, s => s.get_sender_key(sk)), Some(b"sk2".to_vec()));
    assert_eq!(
        both!(p, s => s.get_sender_key("g2::me")),
        Some(b"other".to_vec())
    );
    both!(p, s => s.delete_sender_key(sk));
    assert_eq!(both!(p, s => s.get_sender_key(sk)), None);
}

async fn app_sync_store_matches_in_memory(t: TestDb) {
    let f = fixture(&t).await;
    let p = Pair::new(&f);

    // Sync keys and the latest key id.
    assert!(both!(p, s => s.get_sync_key(b"k1"), json).is_null());
    assert_eq!(both!(p, s => s.get_latest_sync_key_id()), None);
    let key = |n: u8| AppStateSyncKey {
        key_data: vec![n; 32],
        fingerprint: vec![n, n + 1],
        timestamp: 1_700_000_000 + i64::from(n),
    };
    both!(p, s => s.set_sync_key(&[0, 1, 2], key(1)));
    both!(p, s => s.set_sync_key(&[9, 9], key(2)));
    assert_eq!(both!(p, s => s.get_latest_sync_key_id()), Some(vec![9, 9]));
    let got = both!(p, s => s.get_sync_key(&[0, 1, 2]), json);
    assert_eq!(got["timestamp"], 1_700_000_001);
    both!(p, s => s.set_sync_key(&[0, 1, 2], key(3)));
    assert_eq!(
        both!(p, s => s.get_latest_sync_key_id()),
        Some(vec![0, 1, 2])
    );
    assert_eq!(
        both!(p, s => s.get_sync_key(&[0, 1, 2]), json)["timestamp"],
        1_700_000_003
    );

    // Collection versions.
    let empty = both!(p, s => s.get_version("regular"), json);
    assert_eq!(empty["version"], 0);
    let mut state = HashState {
        version: 42,
        hash: [7; 128],
        ..HashState::default()
    };
    state.index_value_map.insert("idx-a".into(), vec![1, 2, 3]);
    state.index_value_map.insert("idx-b".into(), vec![]);
    both!(p, s => s.set_version("regular", state.clone()));
    let got = both!(p, s => s.get_version("regular"), json);
    assert_eq!(got, json(&state));
    assert_eq!(
        both!(p, s => s.get_version("critical_block"), json)["version"],
        0
    );
    state.version = 43;
    both!(p, s => s.set_version("regular", state.clone()));
    assert_eq!(both!(p, s => s.get_version("regular"), json)["version"], 43);

    // Mutation MACs.
    let mac = |i: u8, v: u8| AppStateMutationMAC {
        index_mac: vec![i; 32],
        value_mac: vec![v; 32],
    };
    assert_eq!(both!(p, s => s.get_mutation_mac("regular", &[1; 32])), None);
    both!(p, s => s.put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20), mac(3, 30)]));
    both!(p, s => s.put_mutation_macs("critical", 1, &[mac(1, 11)]));
    both!(p, s => s.put_mutation_macs("regular", 2, &[mac(2, 21)]));
    both!(p, s => s.put_mutation_macs("regular", 3, &[]));
    assert_eq!(
        both!(p, s => s.get_mutation_mac("regular", &[2; 32])),
        Some(vec![21; 32])
    );
    assert_eq!(
        both!(p, s => s.get_mutation_mac("critical", &[1; 32])),
        Some(vec![11; 32])
    );
    let many = both!(
        p,
        s => s.get_mutation_macs("regular", &[[1; 32], [2; 32], [4; 32]]),
        mac_map
    );
    assert_eq!(many.len(), 2);
    assert!(both!(p, s => s.get_mutation_macs("regular", &[]), mac_map).is_empty());
    both!(p, s => s.delete_mutation_macs("regular", &[vec![1; 32], vec![9; 32]]));
    assert_eq!(both!(p, s => s.get_mutation_mac("regular", &[1; 32])), None);
    assert_eq!(
        both!(p, s => s.get_mutation_mac("critical", &[1; 32])),
        Some(vec![11; 32]),
        "deleting in one collection leaves the others"
    );
    both!(p, s => s.clear_mutation_macs("regular"));
    assert!(both!(p, s => s.get_mutation_macs("regular", &[[2; 32], [3; 32]]), mac_map).is_empty());
    assert_eq!(
        both!(p, s => s.get_mutation_mac("critical", &[1; 32])),
        Some(vec![11; 32])
    );
}

async fn protocol_store_matches_in_memory(t: TestDb) {
    let f = fixture(&t).await;
    let p = Pair::new(&f);
    let g1 = "120363000000000001@g.us";
    let g2 = "120363000000000002@g.us";

    // Sender-key distribution status.
    assert!(both!(p, s => s.get_sender_key_devices(g1)).is_empty());
    both!(p, s => s.set_sender_key_status(g1, &[("1:1@s.whatsapp.net", true), ("2:0@s.whatsapp.net", false)]));
    both!(p, s => s.set_sender_key_status(g2, &[("1:1@s.whatsapp.net", true), ("3:0@lid", true)]));
    both!(p, s => s.set_sender_key_status(g1, &[("2:0@s.whatsapp.net", true)]));
    both!(p, s => s.set_sender_key_status(g1, &[]));
    assert_eq!(
        both!(p, s => s.get_sender_key_devices(g1), sorted),
        [
            ("1:1@s.whatsapp.net".to_string(), true),
            ("2:0@s.whatsapp.net".to_string(), true)
        ]
    );
    both!(p, s => s.delete_sender_key_device_rows(&["1:1@s.whatsapp.net", "9:9@lid"]));
    both!(p, s => s.delete_sender_key_device_rows(&[]));
    assert_eq!(both!(p, s => s.get_sender_key_devices(g1), sorted).len(), 1);
    assert_eq!(
        both!(p, s => s.get_sender_key_devices(g2), sorted),
        [("3:0@lid".to_string(), true)]
    );
    both!(p, s => s.clear_sender_key_devices(g1));
    assert!(both!(p, s => s.get_sender_key_devices(g1)).is_empty());
    assert_eq!(both!(p, s => s.get_sender_key_devices(g2)).len(), 1);
    both!(p, s => s.clear_all_sender_key_devices());
    assert!(both!(p, s => s.get_sender_key_devices(g2)).is_empty());

    // LID <-> phone number mappings.
    let m = |lid: &str, pn: &str, at: i64| LidPnMappingEntry {
        lid: lid.into(),
        phone_number: pn.into(),
        created_at: at,
        updated_at: at,
        learning_source: "usync".into(),
    };
    assert!(both!(p, s => s.get_lid_mapping("100"), json).is_null());
    assert!(both!(p, s => s.get_pn_mapping("5511"), json).is_null());
    both!(p, s => s.put_lid_mapping(&m("100", "5511", 10)));
    assert_eq!(
        both!(p, s => s.get_lid_mapping("100"), json),
        json(m("100", "5511", 10))
    );
    assert_eq!(both!(p, s => s.get_pn_mapping("5511"), json)["lid"], "100");
    both!(p, s => s.put_lid_mappings(&[m("200", "5522", 11), m("300", "5533", 12)]));
    both!(p, s => s.put_lid_mappings(&[]));
    // The LID moves to another phone number: the old number no longer resolves.
    both!(p, s => s.put_lid_mapping(&m("100", "5544", 13)));
    assert!(both!(p, s => s.get_pn_mapping("5511"), json).is_null());
    assert_eq!(both!(p, s => s.get_pn_mapping("5544"), json)["lid"], "100");
    // A phone number that gets a newer LID answers with the newer one.
    both!(p, s => s.put_lid_mapping(&m("400", "5522", 14)));
    assert_eq!(both!(p, s => s.get_pn_mapping("5522"), json)["lid"], "400");
    assert_eq!(both!(p, s => s.get_all_lid_mappings(), lid_key).len(), 4);

    // Base keys.
    let addr = "15550001:3@s.whatsapp.net";
    assert!(!both!(p, s => s.has_same_base_key(addr, "M1", b"base")));
    both!(p, s => s.save_base_key(addr, "M1", b"base"));
    assert!(both!(p, s => s.has_same_base_key(addr, "M1", b"base")));
    assert!(!both!(p, s => s.has_same_base_key(addr, "M1", b"other")));
    assert!(!both!(p, s => s.has_same_base_key(addr, "M2", b"base")));
    both!(p, s => s.save_base_key(addr, "M1", b"base2"));
    assert!(both!(p, s => s.has_same_base_key(addr, "M1", b"base2")));
    both!(p, s => s.delete_base_key(addr, "M1"));
    assert!(!both!(p, s => s.has_same_base_key(addr, "M1", b"base2")));

    // Device lists.
    let rec = |user: &str, n: u32| DeviceListRecord {
        user: user.into(),
        devices: (0..n)
            .map(|d| DeviceInfo::new(d, Some(d + 1)).with_hosting(d == 2))
            .collect(),
        timestamp: 1_700_000_000 + i64::from(n),
        phash: Some(format!("2:{n}")),
        raw_id: Some(n),
    };
    assert!(both!(p, s => s.get_devices("15550001"), json).is_null());
    both!(p, s => s.update_device_list(rec("15550001", 2)));
    assert_eq!(
        both!(p, s => s.get_devices("15550001"), json),
        json(rec("15550001", 2))
    );
    both!(p, s => s.update_device_lists(vec![rec("15550001", 3), rec("15550002", 1)]));
    both!(p, s => s.update_device_lists(vec![]));
    assert_eq!(
        both!(p, s => s.get_devices("15550001"), json)["devices"][2]["is_hosted"],
        true
    );
    both!(p, s => s.delete_devices("15550001"));
    assert!(both!(p, s => s.get_devices("15550001"), json).is_null());
    assert!(!both!(p, s => s.get_devices("15550002"), json).is_null());

    // Group metadata.
    assert_eq!(both!(p, s => s.get_group_metadata(g1)), None);
    both!(p, s => s.put_group_metadata(g1, b"v1"));
    both!(p, s => s.put_group_metadata(g1, b"v2"));
    assert_eq!(
        both!(p, s => s.get_group_metadata(g1)),
        Some(b"v2".to_vec())
    );
    both!(p, s => s.delete_group_metadata(g1));
    assert_eq!(both!(p, s => s.get_group_metadata(g1)), None);

    // Trusted-contact tokens.
    let tc = |token: &[u8], ts: i64, sender: Option<i64>| TcTokenEntry {
        token: token.to_vec(),
        token_timestamp: ts,
        sender_timestamp: sender,
    };
    let (j1, j2, j3, j4) = ("1@lid", "2@lid", "3@lid", "4@lid");
    assert!(both!(p, s => s.get_tc_token(j1), json).is_null());
    both!(p, s => s.put_tc_token(j1, &tc(b"t1", 100, None)));
    both!(p, s => s.put_tc_token(j1, &tc(b"t1b", 110, Some(50))));
    assert_eq!(
        both!(p, s => s.get_tc_token(j1), json),
        json(tc(b"t1b", 110, Some(50)))
    );
    // Sender bucket: only moves forward, keeps the token; a placeholder when absent.
    both!(p, s => s.touch_tc_token_sender_timestamp(j1, 40));
    assert_eq!(
        both!(p, s => s.get_tc_token(j1), json)["sender_timestamp"],
        50
    );
    both!(p, s => s.touch_tc_token_sender_timestamp(j1, 60));
    assert_eq!(
        both!(p, s => s.get_tc_token(j1), json),
        json(tc(b"t1b", 110, Some(60)))
    );
    both!(p, s => s.touch_tc_token_sender_timestamp(j2, 70));
    assert_eq!(
        both!(p, s => s.get_tc_token(j2), json),
        json(tc(b"", 70, Some(70)))
    );
    // Received tokens: newer wins, a placeholder never blocks, the sender bucket survives.
    both!(p, s => s.store_received_tc_token(j2, b"real", 20));
    assert_eq!(
        both!(p, s => s.get_tc_token(j2), json),
        json(tc(b"real", 20, Some(70)))
    );
    both!(p, s => s.store_received_tc_token(j2, b"stale", 19));
    assert_eq!(
        both!(p, s => s.get_tc_token(j2), json),
        json(tc(b"real", 20, Some(70)))
    );
    both!(p, s => s.store_received_tc_token(j2, b"same-age", 20));
    assert_eq!(
        both!(p, s => s.get_tc_token(j2), json),
        json(tc(b"same-age", 20, Some(70)))
    );
    both!(p, s => s.store_received_tc_token(j3, b"new", 5));
    assert_eq!(
        both!(p, s => s.get_tc_token(j3), json),
        json(tc(b"new", 5, None))
    );
    both!(p, s => s.put_tc_token(j4, &tc(b"", 1, None)));
    assert_eq!(
        both!(p, s => s.get_all_tc_token_jids(), sorted),
        [j1, j2, j3, j4]
    );
    // j1: token 110 live. j2: token 20 dead, sender 70 live. j3: token 5 dead, no sender.
    // j4: empty token, no sender.
    assert_eq!(both!(p, s => s.delete_expired_tc_tokens(100, 65)), 2);
    assert_eq!(both!(p, s => s.get_all_tc_token_jids(), sorted), [j1, j2]);
    assert_eq!(both!(p, s => s.delete_expired_tc_tokens(200, 200)), 2);
    both!(p, s => s.put_tc_token(j1, &tc(b"x", 1, None)));
    both!(p, s => s.delete_tc_token(j1));
    both!(p, s => s.delete_tc_token(j1));
    assert!(both!(p, s => s.get_all_tc_token_jids()).is_empty());
}

async fn msg_secrets_sent_and_pending_match_in_memory(t: TestDb) {
    let f = fixture(&t).await;
    let p = Pair::new(&f);
    let chat = "120363000000000001@g.us";
    let me = "15550001@s.whatsapp.net";

    // Message secrets: merge rules on conflict, expiry.
    assert_eq!(both!(p, s => s.get_msg_secret(chat, me, "M1")), None);
    both!(p, s => s.put_msg_secret(chat, me, "M1", &[1; 32]));
    assert_eq!(
        both!(p, s => s.get_msg_secret(chat, me, "M1")),
        Some(vec![1; 32])
    );
    assert_eq!(
        both!(p, s => s.get_msg_secret_with_ts(chat, me, "M1")),
        Some((vec![1; 32], 0))
    );
    let e = |id: &str, secret: u8, expires_at: i64, message_ts: i64| MsgSecretEntry {
        chat: chat.into(),
        sender: me.into(),
        msg_id: id.into(),
        secret: [secret; 32],
        expires_at,
        message_ts,
    };
    let stored = both!(p, s => s.put_msg_secrets(vec![
        e("M1", 2, 500, 100),  // M1 never expires (0 wins), ts becomes 100
        e("M2", 3, 500, 100),
        e("M2", 4, 400, 0),    // later deadline and known time are kept
        e("M3", 5, 300, 90),
        e("M4", 6, 1000, 0),
    ]));
    assert_eq!(stored, 5);
    assert_eq!(both!(p, s => s.put_msg_secrets(vec![])), 0);
    assert_eq!(
        both!(p, s => s.get_msg_secret_with_ts(chat, me, "M1")),
        Some((vec![2; 32], 100))
    );
    assert_eq!(
        both!(p, s => s.get_msg_secret_with_ts(chat, me, "M2")),
        Some((vec![4; 32], 100))
    );
    // Another sender or chat is another key.
    assert_eq!(
        both!(p, s => s.get_msg_secret(chat, "other@lid", "M2")),
        None
    );
    assert_eq!(both!(p, s => s.delete_expired_msg_secrets(299)), 0);
    assert_eq!(both!(p, s => s.delete_expired_msg_secrets(500)), 2);
    assert_eq!(both!(p, s => s.get_msg_secret(chat, me, "M2")), None);
    assert_eq!(both!(p, s => s.get_msg_secret(chat, me, "M3")), None);
    assert!(both!(p, s => s.get_msg_secret(chat, me, "M1")).is_some());
    assert!(both!(p, s => s.get_msg_secret(chat, me, "M4")).is_some());
    assert_eq!(both!(p, s => s.delete_expired_msg_secrets(i64::MAX)), 1);

    // Sent messages (retry support): atomic take, expiry by the time they were stored.
    both!(p, s => s.store_sent_message(chat, "S1", b"payload-1"));
    both!(p, s => s.store_sent_message(chat, "S2", b"payload-2"));
    both!(p, s => s.store_sent_message("other@s.whatsapp.net", "S1", b"payload-3"));
    assert_eq!(
        both!(p, s => s.take_sent_message(chat, "S1")),
        Some(b"payload-1".to_vec())
    );
    assert_eq!(both!(p, s => s.take_sent_message(chat, "S1")), None);
    let past = now_secs() - 3600;
    assert_eq!(both!(p, s => s.delete_expired_sent_messages(past)), 0);
    assert_eq!(
        both!(p, s => s.delete_expired_sent_messages(now_secs() + 3600)),
        2
    );
    assert_eq!(both!(p, s => s.take_sent_message(chat, "S2")), None);

    // Pending inbound (the durability hook's buffer).
    let other = "15550002@s.whatsapp.net";
    assert_eq!(both!(p, s => s.get_pending_inbound(chat, me, "P1")), None);
    both!(p, s => s.store_pending_inbound(chat, me, "P1", b"m1"));
    both!(p, s => s.store_pending_inbound(chat, me, "P1", b"m1b"));
    assert_eq!(
        both!(p, s => s.get_pending_inbound(chat, me, "P1")),
        Some(b"m1b".to_vec())
    );
    assert_eq!(
        both!(p, s => s.get_pending_inbound(chat, other, "P1")),
        None
    );
    let rows = [
        PendingInboundRow {
            chat,
            sender: other,
            id: "P1",
            message: b"m2",
        },
        PendingInboundRow {
            chat,
            sender: me,
            id: "P2",
            message: b"m3",
        },
        PendingInboundRow {
            chat: other,
            sender: other,
            id: "P3",
            message: b"m4",
        },
    ];
    both!(p, s => s.store_pending_inbound_batch(&rows));
    both!(p, s => s.store_pending_inbound_batch(&[]));
    assert_eq!(
        both!(p, s => s.get_pending_inbound(chat, other, "P1")),
        Some(b"m2".to_vec())
    );
    both!(p, s => s.delete_pending_inbound(chat, me, "P1"));
    assert_eq!(both!(p, s => s.get_pending_inbound(chat, me, "P1")), None);
    let keys = [
        PendingInboundKey {
            chat,
            sender: other,
            id: "P1",
        },
        PendingInboundKey {
            chat,
            sender: me,
            id: "nope",
        },
    ];
    both!(p, s => s.delete_pending_inbound_batch(&keys));
    both!(p, s => s.delete_pending_inbound_batch(&[]));
    assert_eq!(
        both!(p, s => s.get_pending_inbound(chat, other, "P1")),
        None
    );
    assert_eq!(
        both!(p, s => s.get_pending_inbound(chat, me, "P2")),
        Some(b"m3".to_vec())
    );
    assert_eq!(both!(p, s => s.delete_expired_pending_inbound(past)), 0);
    assert_eq!(
        both!(p, s => s.delete_expired_pending_inbound(now_secs() + 3600)),
        2
    );
    assert_eq!(
        both!(p, s => s.get_pending_inbound(other, other, "P3")),
        None
    );
}

/// Writes one record of every kind into `s`, each value derived from `tag`.
pub(crate) async fn fill(s: &DbDeviceStore, tag: u8) {
    let t = |x: &str| format!("{x}-{tag}").into_bytes();
    s.put_identity("15550001@s.whatsapp.net", [tag; 32])
        .await
        .unwrap();
    s.put_session("15550001@s.whatsapp.net", &t("session"))
        .await
        .unwrap();
    s.store_prekey(1, &t("prekey"), true).await.unwrap();
    s.store_signed_prekey(1, &t("spk")).await.unwrap();
    s.put_sender_key("g::me", &t("sk")).await.unwrap();
    s.set_sync_key(
        b"key",
        AppStateSyncKey {
            key_data: t("sync"),
            fingerprint: vec![],
            timestamp: i64::from(tag),
        },
    )
    .await
    .unwrap();
    let state = HashState {
        version: u64::from(tag),
        ..HashState::default()
    };
    s.set_version("regular", state).await.unwrap();
    s.put_mutation_macs(
        "regular",
        1,
        &[AppStateMutationMAC {
            index_mac: vec![1; 32],
            value_mac: t("mac"),
        }],
    )
    .await
    .unwrap();
    s.set_sender_key_status("g", &[("d", tag.is_multiple_of(2))])
        .await
        .unwrap();
    s.put_lid_mapping(&LidPnMappingEntry {
        lid: "100".into(),
        phone_number: format!("55{tag}"),
        created_at: 1,
        updated_at: 1,
        learning_source: "usync".into(),
    })
    .await
    .unwrap();
    s.save_base_key("a", "m", &t("base")).await.unwrap();
    s.update_device_list(DeviceListRecord {
        user: "15550001".into(),
        devices: vec![DeviceInfo::new(u32::from(tag), None)],
        timestamp: 1,
        phash: None,
        raw_id: None,
    })
    .await
    .unwrap();
    s.put_group_metadata("g", &t("meta")).await.unwrap();
    s.put_tc_token(
        "1@lid",
        &TcTokenEntry {
            token: t("tc"),
            token_timestamp: 1,
            sender_timestamp: None,
        },
    )
    .await
    .unwrap();
    s.store_sent_message("c", "S", &t("sent")).await.unwrap();
    s.store_pending_inbound("c", "s", "P", &t("pending"))
        .await
        .unwrap();
    s.put_msg_secret("c", "s", "M", &[tag; 32]).await.unwrap();
}

/// Everything `fill` wrote, as one comparable value (`null` where absent).
pub(crate) async fn snapshot(s: &DbDeviceStore) -> serde_json::Value {
    serde_json::json!({
        "identity": s.load_identity("15550001@s.whatsapp.net").await.unwrap(),
        "session": s.get_session("15550001@s.whatsapp.net").await.unwrap().map(|b| b.to_vec()),
        "prekey": s.load_prekey(1).await.unwrap().map(|b| b.to_vec()),
        "max_prekey": s.get_max_prekey_id().await.unwrap(),
        "spk": s.load_all_signed_prekeys().await.unwrap(),
        "sk": s.get_sender_key("g::me").await.unwrap(),
        "sync": json(s.get_sync_key(b"key").await.unwrap()),
        "latest": s.get_latest_sync_key_id().await.unwrap(),
        "version": s.get_version("regular").await.unwrap().version,
        "mac": s.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
        "skd": s.get_sender_key_devices("g").await.unwrap(),
        "lid": json(s.get_all_lid_mappings().await.unwrap()),
        "base": s.has_same_base_key("a", "m", b"base-1").await.unwrap(),
        "devices": json(s.get_devices("15550001").await.unwrap()),
        "meta": s.get_group_metadata("g").await.unwrap(),
        "tc": s.get_all_tc_token_jids().await.unwrap(),
        "pending": s.get_pending_inbound("c", "s", "P").await.unwrap(),
        "secret": s.get_msg_secret("c", "s", "M").await.unwrap(),
    })
}

async fn device_record_isolation_reopen_and_wipe(t: TestDb) {
    let f = fixture(&t).await;
    let a = DbDeviceStore::new(f.db.clone(), &f.key, f.a.clone());
    let b = DbDeviceStore::new(f.db.clone(), &f.key, f.b.clone());
    let mem = InMemoryBackend::new();
    assert_eq!(a.device_id(), f.a);

    // The Device record: nothing, then create() persists a fresh one, like the reference.
    assert!(!a.exists().await.unwrap());
    assert!(!mem.exists().await.unwrap());
    assert!(a.load().await.unwrap().is_none());
    assert!(!a.is_paired().await.unwrap());
    a.create().await.unwrap();
    mem.create().await.unwrap();
    assert!(a.exists().await.unwrap());
    assert!(mem.exists().await.unwrap());
    let fresh = a.load().await.unwrap().expect("created device");
    assert!(fresh.pn.is_none());
    assert!(
        !a.is_paired().await.unwrap(),
        "a fresh device is not paired"
    );
    // create() again keeps the keys that are already there.
    a.create().await.unwrap();
    let again = a.load().await.unwrap().unwrap();
    assert_eq!(json(&again), json(&fresh));
    // save() overwrites; the round trip keeps every persisted field.
    let mut paired = Device::new();
    paired.pn = Some("15550001:12@s.whatsapp.net".parse().unwrap());
    paired.lid = Some("100000001:12@lid".parse().unwrap());
    paired.push_name = "Wagate".into();
    paired.registration_id = 4242;
    paired.next_pre_key_id = 77;
    paired.login_counter = 3;
    paired.edge_routing_info = Some(vec![1, 2, 3]);
    a.save(&paired).await.unwrap();
    mem.save(&paired).await.unwrap();
    let loaded = a.load().await.unwrap().unwrap();
    assert_eq!(json(&loaded), json(&paired));
    assert_eq!(json(&loaded), json(mem.load().await.unwrap().unwrap()));
    assert_eq!(
        loaded.identity_key.public_key.public_key_bytes(),
        paired.identity_key.public_key.public_key_bytes()
    );
    assert!(a.is_paired().await.unwrap());
    assert_eq!(
        a.resource_report().await.memory_bytes,
        Some(0),
        "the data lives in the database"
    );

    // Isolation: b sees nothing of a, and its own writes do not touch a.
    fill(&a, 1).await;
    let a_state = snapshot(&a).await;
    let empty = snapshot(&b).await;
    assert!(!b.exists().await.unwrap());
    assert!(!b.is_paired().await.unwrap());
    assert!(empty["identity"].is_null());
    assert!(empty["session"].is_null());
    assert!(empty["prekey"].is_null());
    assert_eq!(empty["max_prekey"], 0);
    assert_eq!(empty["lid"], serde_json::json!([]));
    assert!(empty["secret"].is_null());
    fill(&b, 2).await;
    b.create().await.unwrap();
    let b_state = snapshot(&b).await;
    assert_ne!(a_state, b_state);
    assert_eq!(snapshot(&a).await, a_state);
    assert!(a_state["base"].as_bool().unwrap());
    assert!(!b_state["base"].as_bool().unwrap());
    assert_ne!(
        json(b.load().await.unwrap().unwrap()),
        json(&paired),
        "each session has its own device"
    );
    // Expiry sweeps are per session too.
    assert_eq!(
        b.delete_expired_sent_messages(now_secs() + 60)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.take_sent_message("c", "S").await.unwrap(),
        Some(b"sent-1".to_vec())
    );
    a.store_sent_message("c", "S", b"sent-1").await.unwrap();
    b.store_sent_message("c", "S", b"sent-2").await.unwrap();

    // Persistence: a fresh Db handle (new pool, new connections) sees the same state.
    drop((a, b));
    drop(f.db);
    let db2 = t.open();
    assert_eq!(db2.migrate().unwrap(), 0);
    let a = DbDeviceStore::new(db2.clone(), &f.key, f.a.clone());
    let b = DbDeviceStore::new(db2.clone(), &f.key, f.b.clone());
    assert_eq!(snapshot(&a).await, a_state);
    assert_eq!(snapshot(&b).await, b_state);
    assert_eq!(json(a.load().await.unwrap().unwrap()), json(&paired));
    assert!(a.is_paired().await.unwrap());
    let (dev_a, paired_a) = (f.a.clone(), {
        let (id, key) = (f.a.clone(), f.key.clone());
        db2.run(move |c| device_store::is_paired(c, &key, &id))
            .await
            .unwrap()
    });
    assert!(paired_a);
    let key = f.key.clone();
    let loaded = db2
        .run(move |c| device_store::load_device(c, &key, &dev_a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.push_name, "Wagate");

    // Wipe: everything of a is gone, b is untouched.
    let deleted = a.wipe().await.unwrap();
    assert!(deleted >= 18, "deleted {deleted} rows");
    assert_eq!(snapshot(&a).await, empty);
    assert!(!a.exists().await.unwrap());
    assert!(!a.is_paired().await.unwrap());
    assert_eq!(a.take_sent_message("c", "S").await.unwrap(), None);
    assert_eq!(snapshot(&b).await, b_state);
    assert_eq!(a.wipe().await.unwrap(), 0);
    // The session can start over after a wipe.
    a.create().await.unwrap();
    assert!(a.exists().await.unwrap());
    assert!(!a.is_paired().await.unwrap());
    // wipe() joins a caller's transaction (and is undone with it).
    let id = f.a.clone();
    let rolled_back = db2
        .run(move |c| {
            c.transaction(|c| {
                assert_eq!(device_store::wipe(c, &id)?, 1);
                Err::<(), _>(wagate::error::Error::Internal("roll back".into()))
            })
        })
        .await;
    assert!(rolled_back.is_err());
    assert!(
        a.exists().await.unwrap(),
        "the rolled-back wipe deleted nothing"
    );
    let id = f.a.clone();
    let n = db2
        .run(move |c| c.transaction(|c| device_store::wipe(c, &id)))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(!a.exists().await.unwrap());

    // Deleting the device row deletes its store.
    let id = f.b.clone();
    db2.run(move |c| {
        db_run!(c, |c| diesel::delete(devices::table.find(&id)).execute(c))?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(snapshot(&b).await, empty);
    assert!(!b.exists().await.unwrap());
    let id = f.b.clone();
    let left = db2.run(move |c| device_store::wipe(c, &id)).await.unwrap();
    assert_eq!(left, 0, "cascade left rows behind");
}

/// The LID ↔ phone cache a session's client uses keeps at most `CAPACITY` entries per
/// direction in memory, and a mapping it forgot is read back from the device store in the
/// shape whatsapp-rust's cache expects: nothing learned is lost to the bound.
async fn lid_cache_is_bounded_and_reads_evicted_mappings_from_the_store(t: TestDb) {
    use wagate::sessions::lid_cache::LidCache;
    use whatsapp_rust::CacheStore;
    use whatsapp_rust::lid_pn_cache::LidPnEntry;
    let f = fixture(&t).await;
    let store = Arc::new(DbDeviceStore::new(f.db.clone(), &f.key, f.a.clone()));
    let n = 3 * wagate::sessions::lid_cache::CAPACITY;
    let entry = |i: usize| LidPnMappingEntry {
        lid: format!("{}", 100_000_000 + i),
        phone_number: format!("1555{i:07}"),
        created_at: 1_700_000_000 + i as i64,
        updated_at: 1_700_000_000 + i as i64,
        learning_source: "usync".into(),
    };
    let all: Vec<LidPnMappingEntry> = (0..n).map(entry).collect();
    store.put_lid_mappings(&all).await.unwrap();
    let cache = LidCache::new(store);
    // What whatsapp-rust's warm-up does: every stored mapping set in both directions.
    for e in &all {
        let v = serde_json::to_vec(&LidPnEntry::with_timestamp(
            e.lid.clone(),
            e.phone_number.clone(),
            e.created_at,
            whatsapp_rust::lid_pn_cache::LearningSource::parse(&e.learning_source),
        ))
        .unwrap();
        cache.set("lid_pn_by_lid", &e.lid, &v, None).await.unwrap();
        cache
            .set("lid_pn_by_pn", &e.phone_number, &v, None)
            .await
            .unwrap();
    }
    for ns in ["lid_pn_by_lid", "lid_pn_by_pn"] {
        let held = cache.entry_count(ns).await.unwrap();
        assert!(
            held as usize <= wagate::sessions::lid_cache::CAPACITY,
            "{ns}: {held} in memory"
        );
    }
    // The first mappings were forgotten in memory; both directions still answer them.
    let first = &all[0];
    let by_lid = cache.get("lid_pn_by_lid", &first.lid).await.unwrap();
    let e: LidPnEntry = serde_json::from_slice(&by_lid.expect("read from the store")).unwrap();
    assert_eq!(
        (&*e.lid, &*e.phone_number),
        (&*first.lid, &*first.phone_number)
    );
    assert_eq!(e.created_at, first.created_at);
    let by_pn = cache
        .get("lid_pn_by_pn", &first.phone_number)
        .await
        .unwrap();
    let e: LidPnEntry = serde_json::from_slice(&by_pn.expect("read from the store")).unwrap();
    assert_eq!(&*e.lid, &*first.lid);
    // Unknown keys stay unknown, and other namespaces never reach the store.
    assert!(cache.get("lid_pn_by_lid", "999").await.unwrap().is_none());
    assert!(cache.get("group", &first.lid).await.unwrap().is_none());
}
