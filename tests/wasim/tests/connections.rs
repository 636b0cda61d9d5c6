// The connection log against real whatsapp-rust clients: reconnects,
// replacement by a second login of the same device, and the idle timeout.
// Every wait is bounded; every server is loopback.

use std::sync::Arc;
use std::time::Duration;

use wasim::client::{Admin, ClientOptions, TestClient};
use wasim::wacore::store::in_memory::InMemoryBackend;
use wasim::whatsapp_rust::store::traits::Backend;
use wasim::whatsapp_rust::types::events::Event;
use wasim::{ConnRecord, EndReason, Overlap, Server, ServerHandle, overlaps};

/// Bound for any single expected event or state.
const WAIT: Duration = Duration::from_secs(15);

async fn start_server() -> ServerHandle {
    Server::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start wasim")
}

/// A fresh client, paired through the admin API's simulated phone scan, and
/// the id of the connection it is logged in on.
///
/// After the 515 that ends pairing, whatsapp-rust 0.7 sometimes reconnects
/// twice (its stream-error handler and its read loop both restart it) and
/// drops the first login at once; such an abandoned connection comes before
/// the returned one and is left out of what the tests look at.
async fn paired(server: &ServerHandle, phone: &str) -> (TestClient, Arc<dyn Backend>, u64) {
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let mut c = TestClient::start(server.addr(), backend.clone(), ClientOptions::default())
        .await
        .expect("start client");
    let qr = c.next_qr(WAIT).await.expect("QR code");
    Admin::new(server.addr())
        .scan(&qr, phone)
        .await
        .expect("scan");
    c.connected(WAIT).await.expect("Connected after scan");
    let active = server
        .sim()
        .connections(Some(phone))
        .into_iter()
        .rfind(|c| c.closed_at.is_none())
        .expect("an open connection")
        .id;
    (c, backend, active)
}

fn device_jid(phone: &str) -> String {
    format!("{phone}:1@s.whatsapp.net")
}

/// The device's connections from connection `from` on.
fn conns_since(server: &ServerHandle, device: &str, from: u64) -> Vec<ConnRecord> {
    let mut conns = server.sim().connections(Some(device));
    conns.retain(|c| c.id >= from);
    conns
}

/// Polls the device's connections from `from` on until `f` holds (bounded by [`WAIT`]).
async fn conns_until(
    server: &ServerHandle,
    device: &str,
    from: u64,
    what: &str,
    f: impl Fn(&[ConnRecord]) -> bool,
) -> Vec<ConnRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let conns = conns_since(server, device, from);
        if f(&conns) {
            return conns;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {conns:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the device's newest connection has sent no frame for `quiet`:
/// the client's post-login burst is over.
async fn until_quiet(server: &ServerHandle, device: &str, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = server
            .sim()
            .connections(Some(device))
            .last()
            .map(|c| c.last_frame_at)
            .expect("a connection");
        tokio::time::sleep(quiet).await;
        let now = server
            .sim()
            .connections(Some(device))
            .last()
            .map(|c| c.last_frame_at);
        if now == Some(last) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{device} never went quiet"
        );
    }
}

/// The overlaps among connections from `from` on (leaving out the
/// connection [`paired`] sometimes sees abandoned).
fn since(mut found: Vec<Overlap>, from: u64) -> Vec<Overlap> {
    found.retain(|o| o.first >= from);
    found
}

/// The client's close: a close frame or, if it only drops the socket, a
/// socket error; either way not something the server did.
fn closed_by_client(c: &ConnRecord) -> bool {
    matches!(
        c.end,
        Some(EndReason::ClientClosed | EndReason::SocketError)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_logs_two_connections_without_overlap() {
    let server = start_server().await;
    let phone = "15550010001";
    let jid = device_jid(phone);
    let (c, store, first_id) = paired(&server, phone).await;
    c.stop().await;
    conns_until(
        &server,
        &jid,
        first_id,
        "the first connection to close",
        |c| c.len() == 1 && c[0].closed_at.is_some(),
    )
    .await;

    let mut c = TestClient::start(server.addr(), store, ClientOptions::default())
        .await
        .expect("restart");
    c.connected(WAIT).await.expect("Connected on restart");
    c.stop().await;
    let conns = conns_until(&server, &jid, first_id, "both connections to close", |c| {
        c.len() == 2 && c.iter().all(|c| c.closed_at.is_some())
    })
    .await;

    let (first, second) = (&conns[0], &conns[1]);
    assert_eq!(first.id, first_id);
    assert!(first.id < second.id);
    for c in &conns {
        assert_eq!(c.device.as_deref(), Some(jid.as_str()));
        assert!(closed_by_client(c), "{c:?}");
        assert_eq!(c.replaced_by, None);
        let logged_in = c.logged_in_at.expect("logged in");
        assert!(c.opened_at <= logged_in && logged_in <= c.last_frame_at);
        assert!(c.last_frame_at <= c.closed_at.unwrap());
        assert!(c.frames > 0, "a logged-in client sends stanzas");
        assert!(c.in_use().is_some());
    }
    assert!(first.closed_at.unwrap() <= second.opened_at);
    assert!(overlaps(&conns).is_empty(), "{conns:#?}");
    let all_of_device = server.sim().connections(Some(&jid));
    let found = server.sim().connection_overlaps(Some(&jid));
    assert_eq!(found, overlaps(&all_of_device));
    assert!(since(found, first_id).is_empty(), "{all_of_device:#?}");

    // The pairing (QR) connection is logged under no device, ended by the 515.
    let all = server.sim().connections(None);
    let pairing = &all[0];
    assert_eq!(pairing.device, None);
    assert_eq!(pairing.end, Some(EndReason::PairingDone));
    assert_eq!(pairing.logged_in_at, None);

    // The admin API says the same, filtered by device JID or by phone.
    let admin = Admin::new(server.addr());
    for query in [jid.as_str(), phone] {
        let listed = admin.connections(Some(query)).await.expect("connections");
        assert_eq!(listed, all_of_device, "?device={query}");
        let found = admin
            .connection_overlaps(Some(query))
            .await
            .expect("overlaps");
        assert_eq!(found, overlaps(&all_of_device));
    }
    assert_eq!(admin.connections(None).await.expect("all"), all);
    assert!(
        admin
            .connections(Some("15550019999"))
            .await
            .expect("none")
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_login_replaces_the_first() {
    let server = start_server().await;
    let phone = "15550010002";
    let jid = device_jid(phone);
    let (mut a, store, first_id) = paired(&server, phone).await;
    // A hand-over between two processes: the first is idle (not stopped) when
    // the second logs in on the same session.
    until_quiet(&server, &jid, Duration::from_millis(1500)).await;

    let mut b = TestClient::start(server.addr(), store, ClientOptions::default())
        .await
        .expect("second client");
    b.connected(WAIT).await.expect("second client Connected");
    a.wait_for(WAIT, |e| {
        matches!(e, Event::StreamReplaced(_)).then_some(())
    })
    .await
    .expect("the first client sees StreamReplaced");

    let conns = conns_until(
        &server,
        &jid,
        first_id,
        "the first connection to close",
        |c| c.len() == 2 && c[0].closed_at.is_some(),
    )
    .await;
    let (old, new) = (&conns[0], &conns[1]);
    assert_eq!(old.end, Some(EndReason::Replaced));
    assert_eq!(old.replaced_by, Some(new.id));
    assert_eq!(new.closed_at, None, "the newer connection stays open");
    assert_eq!(new.end, None);
    let new_login = new.logged_in_at.expect("second login");
    assert!(new_login <= old.closed_at.unwrap());

    // The old process was silent since before the new login: the sockets were
    // open together, but the session was never in use by both.
    assert!(
        old.last_frame_seq < new.logged_in_seq.unwrap(),
        "{conns:#?}"
    );
    assert!(old.last_frame_at <= new_login);
    assert!(overlaps(&conns).is_empty());
    let found = server.sim().connection_overlaps(Some(&jid));
    assert!(
        since(found.clone(), first_id).is_empty(),
        "{found:#?} {:#?}",
        server.sim().connections(None)
    );
    let admin = Admin::new(server.addr());
    let listed = admin
        .connection_overlaps(Some(&jid))
        .await
        .expect("overlaps");
    assert!(since(listed, first_id).is_empty());
    // Had the old process sent one more frame after the new login, the two
    // would have been in use at once, over [new login, that frame].
    let mut busy = conns.clone();
    busy[0].last_frame_at = new_login + 5;
    busy[0].last_frame_seq = new.logged_in_seq.unwrap() + 1;
    let found = overlaps(&busy);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].first, found[0].second, found[0].from, found[0].to),
        (old.id, new.id, new_login, new_login + 5)
    );
    assert_eq!(found[0].device, jid);

    // Replaced, the first client does not reconnect (no ping-pong with the second).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(conns_since(&server, &jid, first_id).len(), 2);
    b.stop().await;
    a.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_silent_connection() {
    let server = start_server().await;
    assert_eq!(server.sim().idle_timeout(), None, "off by default");
    let phone = "15550010003";
    let jid = device_jid(phone);
    let (mut a, _, first_id) = paired(&server, phone).await;
    let admin = Admin::new(server.addr());
    let timeout = Duration::from_millis(1500);
    let set = admin
        .idle_timeout(Some(timeout))
        .await
        .expect("set timeout");
    assert_eq!(set["idle_timeout_ms"], 1500);
    assert_eq!(server.sim().idle_timeout(), Some(timeout));

    // whatsapp-rust pings every 15 to 30 s: it stays silent past 1.5 s.
    a.wait_for(WAIT, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await
        .expect("Disconnected by the idle timeout");
    let conns = conns_until(
        &server,
        &jid,
        first_id,
        "the idle connection to close",
        |c| c[0].closed_at.is_some(),
    )
    .await;
    let idle = &conns[0];
    assert_eq!(idle.end, Some(EndReason::IdleTimeout), "{idle:?}");
    let silent = idle.closed_at.unwrap() - idle.last_frame_at;
    // Wall-clock milliseconds against the monotonic deadline: allow some slack.
    assert!(
        silent + 50 >= timeout.as_millis() as u64,
        "closed after {silent} ms"
    );

    // Off again: the client's own reconnect now stays.
    admin.idle_timeout(None).await.expect("clear timeout");
    assert_eq!(server.sim().idle_timeout(), None);
    a.connected(WAIT).await.expect("reconnected");
    tokio::time::sleep(timeout + Duration::from_millis(500)).await;
    let newest = conns_since(&server, &jid, first_id)
        .pop()
        .expect("a connection");
    assert!(newest.id > idle.id);
    assert_eq!(newest.closed_at, None, "{newest:?}");
    a.stop().await;
    server.shutdown().await;
}
