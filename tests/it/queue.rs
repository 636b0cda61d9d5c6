//! The durable queue on a real database: claim order, fencing, retries with backoff, rescue
//! of stuck work, expiry, and concurrent claimers that never take the same message twice.

use std::collections::HashSet;
use wagate::crypto::MasterKey;
use wagate::domain::admin::{Admin, NewProject};
use wagate::storage::accept::{AcceptItem, Limits, accept_batch};
use wagate::storage::messages::queue::{self, Claim};
use wagate::storage::messages::{self, NewMessage};
use wagate::storage::{Db, DbConn, now_ms};
use wagate::values::{MessageStatus, ProjectId, SessionId};

use crate::on_both_backends;
use crate::support::{TestDb, seed_project};

on_both_backends!(
    claim_fence_retry_rescue,
    expiry_and_exhaustion,
    concurrent_claimers_never_share,
    one_recipient_in_order,
    receipt_before_ack_reports_every_step,
    acks_recorded_together_report_each_message_once,
);

struct Fixture {
    db: Db,
    project_id: ProjectId,
    device_id: SessionId,
}

async fn fixture(t: &TestDb) -> Fixture {
    let db = t.migrated();
    let project = NewProject {
        name: "q".into(),
        rate_limit_per_minute: 1_000_000,
        monthly_quota: 1_000_000,
        max_sessions: 1,
    };
    let admin = Admin::new(db.clone(), MasterKey::generate());
    let p = seed_project(&admin, project, 1).await.remove(0);
    Fixture {
        db,
        project_id: ProjectId::from(p.project_id),
        device_id: SessionId::from(p.device_id),
    }
}

/// Enqueues `n` messages (each to its own recipient) through the real accept path; returns
/// their ids in order.
fn enqueue(
    f: &Fixture,
    conn: &mut DbConn,
    n: usize,
    max_attempts: i32,
    ttl_ms: i64,
) -> Vec<String> {
    enqueue_to(f, conn, n, max_attempts, ttl_ms, None)
}

fn enqueue_to(
    f: &Fixture,
    conn: &mut DbConn,
    n: usize,
    max_attempts: i32,
    ttl_ms: i64,
    to: Option<&str>,
) -> Vec<String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = now_ms();
    let items: Vec<AcceptItem> = (0..n)
        .map(|i| AcceptItem {
            limits: Limits {
                project_id: f.project_id.clone(),
                per_minute: i64::MAX,
                monthly: i64::MAX,
                suspended: false,
            },
            idempotency: None,
            media: None,
            message: NewMessage {
                id: uuid::Uuid::now_v7().to_string(),
                project_id: f.project_id.clone(),
                device_id: f.device_id.clone(),
                device_code: "RK-Q".into(),
                recipient: to.map(str::to_owned).unwrap_or_else(|| {
                    format!(
                        "628{:010}",
                        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    )
                }),
                kind: "text".into(),
                body: Some(format!("m{i}")),
                media_id: None,
                payload: None,
                status: MessageStatus::Queued,
                max_attempts,
                available_at: now,
                created_at: now,
                expires_at: now + ttl_ms,
            },
        })
        .collect();
    accept_batch(conn, &items, now)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().id().to_owned())
        .collect()
}

const LEASE: i64 = 30_000;

async fn claim_fence_retry_rescue(t: TestDb) {
    let f = fixture(&t).await;
    let mut c = f.db.connect().unwrap();
    let ids = enqueue(&f, &mut c, 3, 5, 3_600_000);
    let now = now_ms();

    let first = queue::claim(&mut c, &f.device_id, "node-a", 2, LEASE, now).unwrap();
    assert_eq!(
        first.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        ids[..2],
        "acceptance order"
    );
    assert!(
        first
            .iter()
            .all(|m| m.attempts == 1 && m.claimed_by.as_deref() == Some("node-a"))
    );
    let second = queue::claim(&mut c, &f.device_id, "node-b", 10, LEASE, now).unwrap();
    assert_eq!(second.len(), 1, "leased messages are not claimed again");
    assert_eq!(second[0].id, ids[2]);

    // Sent: fenced on the claim token.
    assert!(queue::mark_sent(&mut c, &first[0].claim("node-a"), "WA-1", now).unwrap());
    let sent = messages::by_id(&mut c, &f.project_id, &first[0].id)
        .unwrap()
        .unwrap();
    assert_eq!(
        (sent.status.as_str(), sent.wa_message_id.as_deref()),
        ("sent", Some("WA-1"))
    );
    assert!(
        !queue::mark_sent(&mut c, &first[0].claim("node-a"), "WA-1", now).unwrap(),
        "completes once"
    );

    // Transient failure: back to the queue, not due until the backoff passes.
    let retry_at = now + queue::backoff_ms(first[1].attempts);
    assert!(
        queue::retry_later(&mut c, &first[1], "node-a", "socket closed", retry_at, now).unwrap()
    );
    assert!(
        queue::claim(&mut c, &f.device_id, "node-a", 10, LEASE, now + 1)
            .unwrap()
            .is_empty()
    );
    let again = queue::claim(&mut c, &f.device_id, "node-a", 10, LEASE, retry_at).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempts),
        (ids[1].as_str(), 2)
    );

    // node-b stalls past its lease: the message is rescued by node-c, and node-b's late
    // completion is refused by the fence.
    let later = now + LEASE + 1;
    let rescued = queue::claim(&mut c, &f.device_id, "node-c", 10, LEASE, later).unwrap();
    assert_eq!(
        rescued.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [ids[2].as_str()]
    );
    assert!(rescued[0].claim_token > second[0].claim_token);
    assert!(!queue::mark_sent(&mut c, &second[0].claim("node-b"), "WA-late", later).unwrap());
    assert!(queue::mark_sent(&mut c, &rescued[0].claim("node-c"), "WA-3", later).unwrap());
    let m3 = messages::by_id(&mut c, &f.project_id, &ids[2])
        .unwrap()
        .unwrap();
    assert_eq!(m3.wa_message_id.as_deref(), Some("WA-3"));

    // A permanent failure records code, message and time.
    assert!(
        queue::fail(
            &mut c,
            &again[0].claim("node-a"),
            "INVALID_RECIPIENT",
            "not on WhatsApp",
            later
        )
        .unwrap()
    );
    let m2 = messages::by_id(&mut c, &f.project_id, &ids[1])
        .unwrap()
        .unwrap();
    assert_eq!(
        (m2.status.as_str(), m2.error_code.as_deref(), m2.failed_at),
        ("failed", Some("INVALID_RECIPIENT"), Some(later))
    );
    assert_eq!(messages::queued_count(&mut c).unwrap(), 0);
}

async fn expiry_and_exhaustion(t: TestDb) {
    let f = fixture(&t).await;
    let mut c = f.db.connect().unwrap();
    let short = enqueue(&f, &mut c, 1, 5, 1_000);
    let fragile = enqueue(&f, &mut c, 1, 1, 3_600_000);
    let now = now_ms();
    // The fragile message's only attempt dies with its worker.
    let claimed = queue::claim(&mut c, &f.device_id, "node-a", 10, LEASE, now).unwrap();
    assert_eq!(claimed.len(), 2);
    let later = now + LEASE + 2_000;
    assert!(
        queue::claim(&mut c, &f.device_id, "node-b", 10, LEASE, later)
            .unwrap()
            .is_empty(),
        "neither is claimable"
    );
    assert_eq!(queue::expire_and_exhaust(&mut c, later).unwrap(), 2);
    let e = messages::by_id(&mut c, &f.project_id, &short[0])
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.status.as_str(), e.error_code.as_deref()),
        ("failed", Some(queue::EXPIRED_CODE))
    );
    let x = messages::by_id(&mut c, &f.project_id, &fragile[0])
        .unwrap()
        .unwrap();
    assert_eq!(
        (x.status.as_str(), x.error_code.as_deref()),
        ("failed", Some(queue::EXHAUSTED_CODE))
    );
    // retry_later on the last attempt fails the message instead of requeueing it.
    let last = enqueue(&f, &mut c, 1, 1, 3_600_000);
    let m = queue::claim(&mut c, &f.device_id, "node-a", 1, LEASE, later)
        .unwrap()
        .remove(0);
    assert_eq!(m.id, last[0]);
    assert!(queue::retry_later(&mut c, &m, "node-a", "timeout", later + 1000, later).unwrap());
    let m = messages::by_id(&mut c, &f.project_id, &last[0])
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.status.as_str(), m.error_code.as_deref()),
        ("failed", Some(queue::EXHAUSTED_CODE))
    );
}

/// Four "nodes" (threads with their own connections) drain one device's queue at once.
async fn concurrent_claimers_never_share(t: TestDb) {
    let f = fixture(&t).await;
    let mut c = f.db.connect().unwrap();
    let mut all = Vec::new();
    for _ in 0..4 {
        all.extend(enqueue(&f, &mut c, 250, 5, 3_600_000));
    }
    let handles: Vec<_> = (0..4)
        .map(|n| {
            let db = f.db.clone();
            let device = f.device_id.clone();
            std::thread::spawn(move || {
                let mut conn = db.connect().unwrap();
                let node = format!("node-{n}");
                let mut got = Vec::new();
                loop {
                    let batch =
                        queue::claim(&mut conn, &device, &node, 7, LEASE, now_ms()).unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    for m in batch {
                        assert!(
                            queue::mark_sent(&mut conn, &m.claim(&node), "WA", now_ms()).unwrap()
                        );
                        got.push(m.id);
                    }
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for h in handles {
        for id in h.join().unwrap() {
            total += 1;
            assert!(seen.insert(id), "a message was claimed twice");
        }
    }
    assert_eq!(total, all.len());
    assert_eq!(seen, all.into_iter().collect::<HashSet<_>>());
}

/// A recipient's messages are claimed one at a time, in acceptance order: the next one is
/// due only when the one before it is no longer queued (sent, failed) — also while the one
/// before waits for its server ack after being written to WhatsApp.
async fn one_recipient_in_order(t: TestDb) {
    let f = fixture(&t).await;
    let mut c = f.db.connect().unwrap();
    let same = enqueue_to(&f, &mut c, 3, 5, 3_600_000, Some("6281111111111"));
    let other = enqueue(&f, &mut c, 1, 5, 3_600_000);
    let now = now_ms();
    let got = queue::claim(&mut c, &f.device_id, "n", 10, LEASE, now).unwrap();
    let ids: Vec<_> = got.iter().map(|m| m.id.clone()).collect();
    assert_eq!(
        ids,
        vec![same[0].clone(), other[0].clone()],
        "only the head of each recipient"
    );
    // Written to WhatsApp, waiting for the ack: the next one still waits.
    assert!(
        queue::mark_dispatched(
            &mut c,
            &Claim {
                message_id: same[0].clone(),
                node: "n".into(),
                token: got[0].claim_token
            },
            "WA-A",
            now + 60_000
        )
        .unwrap()
    );
    assert!(
        queue::claim(&mut c, &f.device_id, "n", 10, LEASE, now)
            .unwrap()
            .is_empty()
    );
    // Acked: sent, and the next message of that recipient is due.
    assert_eq!(
        queue::mark_acked(&mut c, &f.device_id, "WA-A", now).unwrap(),
        vec![same[0].clone()]
    );
    let next = queue::claim(&mut c, &f.device_id, "n", 10, LEASE, now).unwrap();
    assert_eq!(
        next.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![same[1].clone()]
    );
    // A permanent failure also lets the next one go.
    assert!(queue::fail(&mut c, &next[0].claim("n"), "X", "x", now).unwrap());
    let last = queue::claim(&mut c, &f.device_id, "n", 10, LEASE, now).unwrap();
    assert_eq!(last[0].id, same[2]);
    // Receipts move statuses forward only.
    assert!(
        queue::mark_dispatched(
            &mut c,
            &Claim {
                message_id: same[2].clone(),
                node: "n".into(),
                token: last[0].claim_token
            },
            "WA-C",
            now + 60_000
        )
        .unwrap()
    );
    let read = queue::mark_receipt(
        &mut c,
        &f.device_id,
        &["WA-C".into(), "WA-A".into()],
        true,
        now,
    )
    .unwrap();
    assert_eq!(read.len(), 2);
    let delivered =
        queue::mark_receipt(&mut c, &f.device_id, &["WA-C".into()], false, now).unwrap();
    assert!(delivered.is_empty(), "read is not downgraded to delivered");
    let m = messages::by_id(&mut c, &f.project_id, &same[2])
        .unwrap()
        .unwrap();
    assert_eq!(m.status.as_str(), "read");
    assert!(m.sent_at.is_some() && m.delivered_at.is_some() && m.read_at.is_some());
}

/// A receipt can arrive before the server ack: the steps it implies are reported too, once
/// and in order, so a webhook subscriber always sees `sent` before `delivered` before `read`.
async fn receipt_before_ack_reports_every_step(t: TestDb) {
    use wagate::storage::events;
    let f = fixture(&t).await;
    let mut c = f.db.connect().unwrap();
    let ids = enqueue(&f, &mut c, 2, 5, 3_600_000);
    let now = now_ms();
    let claimed = queue::claim(&mut c, &f.device_id, "node-a", 2, LEASE, now).unwrap();
    for (m, wa) in claimed.iter().zip(["WA-1", "WA-2"]) {
        assert!(queue::mark_dispatched(&mut c, &m.claim("node-a"), wa, now + LEASE).unwrap());
    }
    // The first is read before anything else was heard of it; the second is acked, then
    // delivered, and a late duplicate receipt changes nothing.
    queue::mark_receipt(&mut c, &f.device_id, &["WA-1".into()], true, now).unwrap();
    queue::mark_acked(&mut c, &f.device_id, "WA-2", now).unwrap();
    queue::mark_receipt(&mut c, &f.device_id, &["WA-2".into()], false, now).unwrap();
    queue::mark_receipt(&mut c, &f.device_id, &["WA-2".into()], false, now).unwrap();
    queue::mark_acked(&mut c, &f.device_id, "WA-1", now).unwrap();

    let steps = |id: &str| -> Vec<String> {
        events::after(
            &mut f.db.connect().unwrap(),
            &f.project_id,
            None,
            events::Cursor::default(),
            100,
        )
        .unwrap()
        .iter()
        .map(events::data_json)
        .filter(|d| d["messageId"] == id)
        .map(|d| d["status"].as_str().unwrap().to_owned())
        .collect()
    };
    // The event log shows a transaction's events once every older transaction on the
    // server has ended (other tests' included): wait for the last one that wrote events.
    crate::support::eventually(20, "the events to be readable", || async {
        steps(&ids[1])
            .contains(&"delivered".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(steps(&ids[0]), ["sent", "delivered", "read"]);
    assert_eq!(steps(&ids[1]), ["sent", "delivered"]);
}

/// A session records the acks waiting in its event loop in one statement: each acked message
/// becomes `sent` with one event, an ack for no message of ours changes nothing, and a
/// repeated ack reports nothing twice.
async fn acks_recorded_together_report_each_message_once(t: TestDb) {
    use wagate::storage::events;
    let f = fixture(&t).await;
    let mut c = f.db.connect().unwrap();
    let ids = enqueue(&f, &mut c, 3, 5, 3_600_000);
    let now = now_ms();
    let claimed = queue::claim(&mut c, &f.device_id, "node-a", 3, LEASE, now).unwrap();
    assert_eq!(claimed.len(), 3, "three recipients: all due at once");
    let was: Vec<String> = (1..=3).map(|i| format!("WA-T{i}")).collect();
    for (m, wa) in claimed.iter().zip(&was) {
        assert!(queue::mark_dispatched(&mut c, &m.claim("node-a"), wa, now + LEASE).unwrap());
    }
    let mut acks = was.clone();
    acks.push("WA-NOT-OURS".into());
    let mut acked = queue::mark_acked_all(&mut c, &f.device_id, &acks, now).unwrap();
    acked.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(acked, want);
    assert!(
        queue::mark_acked_all(&mut c, &f.device_id, &was, now)
            .unwrap()
            .is_empty(),
        "a repeated ack changes nothing"
    );
    let sent = |id: &str| -> usize {
        events::after(
            &mut f.db.connect().unwrap(),
            &f.project_id,
            None,
            events::Cursor::default(),
            100,
        )
        .unwrap()
        .iter()
        .map(events::data_json)
        .filter(|d| d["messageId"] == id && d["status"] == "sent")
        .count()
    };
    crate::support::eventually(20, "the events to be readable", || async {
        ids.iter().all(|id| sent(id) == 1).then_some(())
    })
    .await;
    for id in &ids {
        assert_eq!(sent(id), 1, "one sent event for {id}");
        let m = messages::by_id(&mut c, &f.project_id, id).unwrap().unwrap();
        assert_eq!(m.status.as_str(), "sent");
    }
}
