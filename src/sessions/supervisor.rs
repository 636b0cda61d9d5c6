//! One session's lifetime: build the bot, follow its events, restart it with backoff when
//! it dies unexpectedly, stop for good on logout, replacement, ban or an outdated client.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::{Bot, EventDelivery};
use whatsapp_rust::types::events::Event;

use super::statuses::{self, Report};
use super::{Inner, SessionState, SharedHttp, Slot, inbound, outbound};
use crate::storage::{now_ms, sessions};

/// Events buffered between the client and the supervisor. The client's ordered mailbox
/// waits on this channel, so a slow supervisor first fills this, then that mailbox. tokio's
/// channel allocates its slots in small blocks as they fill, so an idle session's costs
/// nothing: the capacity is here, not in the mailbox.
const EVENT_BUFFER: usize = 8192;
/// whatsapp-rust's own ordered mailbox in front of our channel; past both the library drops
/// events (it never blocks its receive loop). Inbound messages are not at risk: they are
/// committed by the durability hook before they are acknowledged, whatever happens here.
/// Small, because its ring is allocated whole up front (16 bytes a slot, per session).
const CLIENT_MAILBOX: usize = 64;
/// The longest a login holds its turn (the handshake's own timeout is 20 s).
const LOGIN_TURN: Duration = Duration::from_secs(20);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A run of the client at least this long resets the restart back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(120);

/// How one run of the client ended.
enum End {
    /// Asked to stop, or a terminal state (logged out, replaced, banned, outdated).
    Final,
    /// The client died unexpectedly: start it again.
    Restart,
    /// Another node owns the session now (a fenced write was refused, or WhatsApp replaced
    /// this connection with that node's): stop without writing anything.
    Moved,
}

pub(super) async fn supervise(inner: Arc<Inner>, slot: Arc<Slot>) {
    let mut failures: u32 = 0;
    loop {
        if *slot.stop.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        // Each run is its own task: a panic in it is caught here, not spread.
        let run = tokio::spawn(run_once(inner.clone(), slot.clone()));
        let end = match run.await {
            Ok(end) => end,
            Err(e) => {
                tracing::error!(device = %slot.device_id, error = %e, "session task failed");
                End::Restart
            }
        };
        *slot.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match end {
            End::Final => return,
            End::Moved => {
                tracing::info!(device = %slot.device_id, "the session moved to another node; stopped here");
                ::metrics::counter!("wagate_session_handovers_total", "side" => "lost")
                    .increment(1);
                slot.gate.cut().await;
                inner.forget(&slot);
                return;
            }
            End::Restart => {
                // A run that lasted was healthy: back-off starts over.
                if started.elapsed() >= HEALTHY_RUN {
                    failures = 0;
                }
                failures += 1;
                let delay = Duration::from_secs(1u64 << failures.min(8)).min(MAX_BACKOFF);
                let reason = format!("restarting in {}s", delay.as_secs());
                persist_state(&inner, &slot, SessionState::Disconnected, Some(reason)).await;
                let mut stop = slot.stop.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = until_stopped(&mut stop) => return,
                }
            }
        }
    }
}

/// Resolves once the session is asked to stop.
async fn until_stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Stores the state, then shows it: what GetSession or WatchSession report is already durable
/// (and its `session.status` event recorded), so a reader never sees a state the database
/// does not hold yet.
async fn persist_state(inner: &Inner, slot: &Slot, state: SessionState, reason: Option<String>) {
    let (id, stored) = (slot.device_id.clone(), reason.clone());
    if let Err(e) = slot
        .write(&inner.db, move |c| {
            sessions::set_state(c, &id, state.as_str(), stored.as_deref(), now_ms())
        })
        .await
    {
        tracing::warn!(device = %slot.device_id, error = %e, "cannot persist session state");
    }
    slot.update(|s| {
        s.state = state;
        s.reason = reason;
        if state != SessionState::Qr {
            s.qr = None;
        }
    });
}

async fn run_once(inner: Arc<Inner>, slot: Arc<Slot>) -> End {
    let (tx, mut events) = mpsc::channel::<Arc<Event>>(EVENT_BUFFER);
    let store_failed = Arc::new(Notify::new());
    let store = inner.stores.open(&slot.fence);
    let cache = whatsapp_rust::CacheConfig {
        cache_stores: whatsapp_rust::CacheStores {
            lid_pn_cache: Some(Arc::new(super::lid_cache::LidCache::new(store.clone()))),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut builder = Bot::builder()
        .with_backend_arc(store)
        .with_cache_config(cache)
        .with_transport_factory(slot.gate.factory(inner.connector.transport.clone()))
        .with_http_client(SharedHttp(inner.connector.http.clone()))
        .with_runtime(TokioRuntime)
        .skip_history_sync()
        // One event at a time, in arrival order: the default delivery spawns a task per
        // event, so a `Disconnected` could be applied after the `Connected` that followed
        // it, or a receipt before the server ack of the same message.
        .with_event_delivery(EventDelivery::Ordered {
            capacity: CLIENT_MAILBOX,
        })
        .with_inbound_durability_hook(inbound::Hook {
            inner: inner.clone(),
            slot: slot.clone(),
            failed: store_failed.clone(),
        })
        .on_event(move |ev, _client| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ev).await;
            }
        });
    if let Some(v) = inner.connector.version {
        builder = builder.with_version(v);
    }
    // A login's turn (see `LOGINS_AT_ONCE`): held until the session connects, shows a QR code,
    // or `LOGIN_TURN` passes, whichever comes first.
    let mut stop = slot.stop.subscribe();
    let mut turn = tokio::select! {
        p = inner.logins.clone().acquire_owned() => p.ok(),
        _ = until_stopped(&mut stop) => return End::Final,
    };
    let turn_over = tokio::time::sleep(LOGIN_TURN);
    tokio::pin!(turn_over);
    let bot = match builder.build().await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(device = %slot.device_id, error = %e, "cannot build the WhatsApp client");
            return End::Restart;
        }
    };
    let client = bot.client();
    *slot.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
    let handle = bot.spawn();
    let worker = tokio::spawn(outbound::run(inner.clone(), slot.clone(), client.clone()));

    let end = 'run: loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    for step in gather(ev, &mut events) {
                        let ev = match step {
                            Step::Reports(reports) => {
                                statuses::record(&inner, &slot, reports).await;
                                continue;
                            }
                            Step::Event(ev) => ev,
                        };
                        if matches!(*ev, Event::Connected(_) | Event::PairingQrCode(_)) {
                            turn = None;
                        }
                        if let Some(end) = on_event(&inner, &slot, &client, &ev).await {
                            break 'run end;
                        }
                    }
                }
                None => break End::Restart,
            },
            _ = &mut turn_over, if turn.is_some() => turn = None,
            _ = until_stopped(&mut stop) => break End::Final,
            _ = slot.lost.notified() => break End::Moved,
            _ = store_failed.notified() => {
                tracing::warn!(device = %slot.device_id, "an inbound message could not be stored; reconnecting for its redelivery");
                break End::Restart;
            }
        }
    };
    worker.abort();
    if matches!(end, End::Moved) {
        // Not one more frame for a session another node runs.
        slot.gate.cut().await;
    }
    if tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(device = %slot.device_id, "client did not stop in time");
    }
    end
}

/// What the event loop does next: record acks and receipts together, or apply one event.
enum Step {
    Reports(Vec<Report>),
    Event(Arc<Event>),
}

/// `first` and the events already waiting behind it (up to [`statuses::BATCH`]), in order,
/// with runs of acks and receipts grouped so each run is one transaction.
fn gather(first: Arc<Event>, events: &mut mpsc::Receiver<Arc<Event>>) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(ev) = next.take() {
        taken += 1;
        match Report::of(&ev) {
            Some(r) => {
                if let Some(Step::Reports(run)) = steps.last_mut() {
                    run.push(r);
                } else {
                    steps.push(Step::Reports(vec![r]));
                }
            }
            None => steps.push(Step::Event(ev)),
        }
        if taken < statuses::BATCH {
            next = events.try_recv().ok();
        }
    }
    steps
}

/// Applies one event; `Some` ends this run of the client.
async fn on_event(
    inner: &Inner,
    slot: &Slot,
    client: &Arc<whatsapp_rust::Client>,
    ev: &Event,
) -> Option<End> {
    let device = slot.device_id.clone();
    match ev {
        Event::PairingQrCode(q) => {
            let until = now_ms() + q.timeout.as_millis() as i64;
            let (id, code) = (device.clone(), q.code.clone());
            if let Err(e) = slot
                .write(&inner.db, move |c| {
                    sessions::set_qr(c, &id, &code, now_ms())
                })
                .await
            {
                tracing::warn!(device = %device, error = %e, "cannot persist the QR state");
            }
            slot.update(|s| {
                s.state = SessionState::Qr;
                s.reason = None;
                s.qr = Some((q.code.clone(), until));
            });
        }
        Event::PairSuccess(p) => {
            let phone = p.id.user.to_string();
            let (jid, lid) = (p.id.to_string(), p.lid.to_string());
            let (id, stored) = (device.clone(), phone.clone());
            if let Err(e) = slot
                .write(&inner.db, move |c| {
                    sessions::set_account(c, &id, &jid, Some(&lid), &stored, now_ms())
                })
                .await
            {
                tracing::warn!(device = %device, error = %e, "cannot persist the linked account");
            }
            slot.update(|s| s.phone = Some(phone));
            persist_state(inner, slot, SessionState::Connecting, None).await;
        }
        Event::Connected(_) => {
            let now = now_ms();
            let push_name = Some(client.push_name()).filter(|n| !n.is_empty());
            let (id, stored) = (device.clone(), push_name.clone());
            if let Err(e) = slot
                .write(&inner.db, move |c| {
                    sessions::set_connected(c, &id, stored.as_deref(), now)
                })
                .await
            {
                tracing::warn!(device = %device, error = %e, "cannot persist connected state");
            }
            slot.update(|s| {
                s.state = SessionState::Connected;
                s.reason = None;
                s.qr = None;
                s.pairing_code = None;
                s.last_connected_at = Some(now);
                if push_name.is_some() {
                    s.push_name = push_name;
                }
            });
            slot.wake.notify_one();
        }
        Event::Disconnected(d) => {
            // whatsapp-rust reconnects by itself with backoff.
            persist_state(
                inner,
                slot,
                SessionState::Disconnected,
                Some(format!("{:?}", d.reason)),
            )
            .await;
        }
        Event::LoggedOut(l) => {
            // Stored first, fenced: a node that no longer owns the session wipes nothing.
            // It runs nowhere any more (its lease goes), as after a logout by request.
            let reason = format!("logged out: {:?}", l.reason);
            let (id, stored) = (device.clone(), reason.clone());
            let recorded = slot
                .write(&inner.db, move |c| {
                    crate::storage::cluster::unwant(c, &id)?;
                    sessions::clear_account(c, &id, "logged_out", Some(&stored), now_ms())
                })
                .await;
            if recorded.is_ok()
                && let Err(e) = inner.stores.wipe(&device).await
            {
                tracing::error!(device = %device, error = %e, "cannot wipe the device store after logout");
            }
            slot.update(|s| {
                s.state = SessionState::LoggedOut;
                s.reason = Some(reason);
            });
            return Some(End::Final);
        }
        Event::StreamReplaced(_) => {
            // Replaced by the node that owns the session now: a hand-over, not a failure.
            if let Err(crate::error::Error::SessionMoved) = slot.write(&inner.db, |_| Ok(())).await
            {
                return Some(End::Moved);
            }
            persist_state(
                inner,
                slot,
                SessionState::Failed,
                Some("replaced: another connection took over this session".into()),
            )
            .await;
            return Some(End::Final);
        }
        Event::TemporaryBan(b) => {
            persist_state(
                inner,
                slot,
                SessionState::Banned,
                Some(format!(
                    "temporarily banned ({:?}) for {}s",
                    b.code,
                    b.expire.num_seconds()
                )),
            )
            .await;
            return Some(End::Final);
        }
        Event::ClientOutdated(_) => {
            persist_state(
                inner,
                slot,
                SessionState::Failed,
                Some("client outdated: WhatsApp rejected this client version".into()),
            )
            .await;
            return Some(End::Final);
        }
        Event::PairingQrCodesExhausted(_) => {
            persist_state(
                inner,
                slot,
                SessionState::Pending,
                Some("QR codes expired unscanned; restart the session for new ones".into()),
            )
            .await;
            // Not run again until asked (a restart, a new QR request).
            let id = device.clone();
            let _ = slot
                .write(&inner.db, move |c| crate::storage::cluster::unwant(c, &id))
                .await;
            return Some(End::Final);
        }
        // Messages the durability hook committed are stored already; the others (channel
        // messages and the like, which the hook does not see) are stored here.
        Event::Messages(batch) if !batch.hook_committed => {
            for m in batch.messages.iter() {
                if let Err(e) = inbound::store(inner, slot, client, m).await {
                    tracing::error!(device = %device, error = %e, "cannot store inbound message");
                }
            }
        }
        _ => {}
    }
    None
}
