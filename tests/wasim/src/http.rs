//! HTTP surface: the chat websocket, the admin API, and the media host.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sim::Sim;

/// Largest media upload accepted.
const MAX_UPLOAD: usize = 64 << 20;

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/ws/chat", get(ws))
        .route("/admin/scan", post(scan))
        .route("/admin/pair-code", post(pair_code))
        .route("/admin/accounts", get(accounts))
        .route("/admin/messages", get(messages))
        .route("/admin/chatstates", get(chatstates))
        .route("/admin/connections", get(connections))
        .route("/admin/connections/overlaps", get(connection_overlaps))
        .route("/admin/idle-timeout", post(idle_timeout))
        .route("/admin/accounts/{phone}/kick", post(kick))
        .route("/admin/accounts/{phone}/logout", post(logout))
        .route("/admin/accounts/{phone}/ban", post(ban))
        .route("/admin/hold-logins", post(hold_logins))
        .route("/admin/min-version", post(min_version))
        .route("/mms/{kind}/{token}", post(upload))
        .route("/v/{*path}", get(download))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(sim)
}

async fn ws(State(sim): State<Arc<Sim>>, up: WebSocketUpgrade) -> Response {
    up.max_message_size(32 << 20)
        .on_upgrade(move |socket| crate::conn::serve(sim, socket))
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

#[derive(Deserialize)]
struct ScanReq {
    qr: String,
    phone: String,
}

async fn scan(State(sim): State<Arc<Sim>>, Json(req): Json<ScanReq>) -> Response {
    match sim.scan(&req.qr, &req.phone) {
        Ok(jid) => Json(json!({ "jid": jid })).into_response(),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct PairCodeReq {
    phone: String,
    code: String,
}

async fn pair_code(State(sim): State<Arc<Sim>>, Json(req): Json<PairCodeReq>) -> Response {
    // PBKDF2 inside: keep it off the async workers.
    let entered = tokio::task::spawn_blocking(move || sim.enter_pair_code(&req.phone, &req.code))
        .await
        .unwrap_or_else(|e| Err(format!("pair-code task failed: {e}")));
    match entered {
        Ok(jid) => Json(json!({ "jid": jid })).into_response(),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Serialize)]
struct DeviceView {
    id: u16,
    jid: String,
    lid: String,
    connected: bool,
    queued: usize,
    dropped: u64,
    prekeys: usize,
    key_index: u32,
    last_seen: Option<u64>,
}

#[derive(Serialize)]
struct AccountView {
    phone: String,
    lid: String,
    banned: bool,
    created: u64,
    devices: Vec<DeviceView>,
}

async fn accounts(State(sim): State<Arc<Sim>>) -> Json<Vec<AccountView>> {
    let st = sim.lock();
    let now = std::time::Instant::now();
    let list = st
        .accounts
        .values()
        .map(|a| AccountView {
            phone: a.phone.clone(),
            lid: a.lid.clone(),
            banned: a.banned_until.is_some_and(|u| u > now),
            created: a.created,
            devices: a
                .devices
                .values()
                .map(|d| DeviceView {
                    id: d.id,
                    jid: format!("{}:{}@s.whatsapp.net", a.phone, d.id),
                    lid: format!("{}:{}@lid", a.lid, d.id),
                    connected: d.conn.is_some(),
                    queued: d.queue.len(),
                    dropped: d.dropped,
                    prekeys: d.prekeys.len(),
                    key_index: d.key_index,
                    last_seen: d.last_seen,
                })
                .collect(),
        })
        .collect();
    Json(list)
}

async fn messages(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sim.lock();
    let list: Vec<_> = st
        .messages
        .iter()
        .filter(|m| q.get("from").is_none_or(|f| m.from.starts_with(f.as_str())))
        .filter(|m| q.get("to").is_none_or(|t| m.to.starts_with(t.as_str())))
        .filter(|m| q.get("id").is_none_or(|i| &m.id == i))
        .cloned()
        .collect();
    Json(list).into_response()
}

/// Chat states devices sent (typing indicators), oldest first; `?from=` and `?to=` are
/// prefixes of the sender's phone and of the `to` JID.
async fn chatstates(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = sim.lock();
    let list: Vec<_> = st
        .chatstates
        .iter()
        .filter(|c| q.get("from").is_none_or(|f| c.from.starts_with(f.as_str())))
        .filter(|c| q.get("to").is_none_or(|t| c.to.starts_with(t.as_str())))
        .cloned()
        .collect();
    Json(list).into_response()
}

/// `?device=` (a device JID or a phone number) narrows both connection views.
#[derive(Deserialize)]
struct DeviceQuery {
    device: Option<String>,
}

async fn connections(State(sim): State<Arc<Sim>>, Query(q): Query<DeviceQuery>) -> Response {
    Json(sim.connections(q.device.as_deref())).into_response()
}

async fn connection_overlaps(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<DeviceQuery>,
) -> Response {
    Json(sim.connection_overlaps(q.device.as_deref())).into_response()
}

#[derive(Deserialize)]
struct IdleTimeoutReq {
    /// Milliseconds without a frame from the client before the server closes
    /// the connection; null or 0 turns the timeout off.
    ms: Option<u64>,
}

async fn idle_timeout(State(sim): State<Arc<Sim>>, Json(req): Json<IdleTimeoutReq>) -> Response {
    sim.set_idle_timeout(req.ms.map(std::time::Duration::from_millis));
    let ms = sim.idle_timeout().map(|d| d.as_millis() as u64);
    Json(json!({ "idle_timeout_ms": ms })).into_response()
}

async fn kick(State(sim): State<Arc<Sim>>, Path(phone): Path<String>) -> Response {
    match sim.kick(&phone) {
        Ok(n) => Json(json!({ "closed": n })).into_response(),
        Err(e) => bad(StatusCode::NOT_FOUND, e),
    }
}

async fn logout(State(sim): State<Arc<Sim>>, Path(phone): Path<String>) -> Response {
    match sim.logout(&phone) {
        Ok(n) => Json(json!({ "removed": n })).into_response(),
        Err(e) => bad(StatusCode::NOT_FOUND, e),
    }
}

#[derive(Deserialize)]
struct BanReq {
    /// Seconds the account's logins are refused; 0 lifts the ban.
    seconds: u64,
}

async fn ban(
    State(sim): State<Arc<Sim>>,
    Path(phone): Path<String>,
    Json(req): Json<BanReq>,
) -> Response {
    match sim.ban(&phone, req.seconds) {
        Ok(()) => Json(json!({ "banned_seconds": req.seconds })).into_response(),
        Err(e) => bad(StatusCode::NOT_FOUND, e),
    }
}

#[derive(Deserialize)]
struct HoldReq {
    /// `true` parks every login unanswered; `false` answers the parked ones.
    hold: bool,
}

async fn hold_logins(State(sim): State<Arc<Sim>>, Json(req): Json<HoldReq>) -> Response {
    sim.hold_logins(req.hold);
    Json(json!({ "hold": req.hold })).into_response()
}

#[derive(Deserialize)]
struct MinVersionReq {
    /// `"2.3000.1023000000"`, or null to accept every client version.
    version: Option<String>,
}

async fn min_version(State(sim): State<Arc<Sim>>, Json(req): Json<MinVersionReq>) -> Response {
    let parsed = match req.version.as_deref() {
        None => None,
        Some(v) => {
            let parts: Vec<u32> = v.split('.').filter_map(|p| p.parse().ok()).collect();
            match parts[..] {
                [a, b, c] => Some((a, b, c)),
                _ => return bad(StatusCode::BAD_REQUEST, "version must be A.B.C"),
            }
        }
    };
    sim.set_min_version(parsed);
    Json(json!({ "min_version": req.version })).into_response()
}

/// Media upload: the body (already encrypted by the client) is stored as is
/// under `/v/<kind>/<token>`, which the client then puts in its message.
async fn upload(
    State(sim): State<Arc<Sim>>,
    Path((kind, token)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if q.contains_key("resume") {
        // No partial uploads are kept: tell the client to start over.
        return bad(StatusCode::NOT_FOUND, "no upload in progress");
    }
    let direct_path = format!("/v/{kind}/{token}");
    let url = format!(
        "https://{}{direct_path}",
        sim.media_host.lock().unwrap_or_else(|p| p.into_inner())
    );
    sim.lock().put_media(direct_path.clone(), body.to_vec());
    Json(json!({ "url": url, "direct_path": direct_path })).into_response()
}

async fn download(State(sim): State<Arc<Sim>>, Path(path): Path<String>) -> Response {
    match sim.lock().get_media(&format!("/v/{path}")) {
        Some(bytes) => (StatusCode::OK, bytes).into_response(),
        None => bad(StatusCode::NOT_FOUND, "no such media"),
    }
}
