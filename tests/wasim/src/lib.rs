//! wasim: a loopback WhatsApp Web server.
//!
//! Unmodified whatsapp-rust 0.7 clients pair with it (QR), log in, and
//! exchange end-to-end encrypted messages and media through it. Like the real
//! service it only relays ciphertext. It exists so wagate's WhatsApp path is
//! tested against the real client library rather than a fake of our driver.
//!
//! Start it in-process with [`Server::start`], or run the binary
//! (`cargo run -p wasim -- --listen 127.0.0.1:PORT`). [`client`] builds real
//! whatsapp-rust bots pointed at a running server.

pub mod client;
mod conn;
pub mod conns;
mod http;
mod noise;
mod phone;
mod sim;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

pub use conns::{ConnRecord, EndReason, Overlap, overlaps};
pub use sim::Sim;
pub use state::ChatstateRecord;

/// The client crates, re-exported so tests that depend only on wasim build
/// bots and messages with the exact versions wasim speaks to.
pub use {wacore, waproto, whatsapp_rust};

/// Pending connections the listener queues (the kernel caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 8192;

/// A running wasim server.
pub struct Server;

impl Server {
    /// Binds `addr` (use port 0 for an ephemeral port) and serves the chat
    /// websocket at `/ws/chat`, the admin API under `/admin/`, and the media
    /// host under `/mms/` and `/v/`, all on that one port.
    pub async fn start(addr: SocketAddr) -> std::io::Result<ServerHandle> {
        // A deep accept queue: a gateway restoring thousands of sessions connects them all at
        // once, and connections past a full queue wait out a SYN retransmit (1 s, then 3 s).
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(ACCEPT_BACKLOG)?;
        let addr = listener.local_addr()?;
        let sim = Sim::new();
        *sim.media_host.lock().unwrap_or_else(|p| p.into_inner()) = addr.to_string();
        let app = http::router(sim.clone());
        let mut stop = sim.shutdown_rx();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            });
            if let Err(e) = served.await {
                tracing::error!("wasim server stopped: {e}");
            }
        });
        Ok(ServerHandle { addr, sim, task })
    }
}

/// Handle to a running server; dropping it does not stop the server, call
/// [`ServerHandle::shutdown`].
pub struct ServerHandle {
    addr: SocketAddr,
    sim: Arc<Sim>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws/chat`, the URL clients dial.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// `http://ADDR/admin`, the admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}/admin", self.addr)
    }

    /// Direct access to the simulator (the same operations the admin API offers).
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Closes every connection and stops serving.
    pub async fn shutdown(self) {
        self.sim.shutdown();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}
