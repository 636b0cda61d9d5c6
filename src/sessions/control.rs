//! The seam between the service layer and running WhatsApp sessions: what the domain asks of
//! a session that runs somewhere (start, stop, restart, its live state with the current QR
//! code, a watch on that state, a pairing code, logout, delete, a number check, a nudge to
//! send).
//!
//! [`SessionControl`] is that contract and [`SessionClient`] the one type the domain holds.
//! The implementation is `cluster::ClusterSessions`: it runs a call on the local
//! [`SessionManager`](super::SessionManager) when this node owns the session and forwards it
//! to the owner otherwise, keeping the promises written on each method.
//!
//! How a node brings its own sessions up and down (claiming leases, handing them over at
//! shutdown) is the cluster membership's lifecycle, not part of this seam.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::Result;

/// Numbers one usync query asks WhatsApp about at most.
pub const MAX_NUMBERS_PER_QUERY: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionState {
    #[default]
    Pending,
    Qr,
    Connecting,
    Connected,
    Disconnected,
    LoggedOut,
    Banned,
    Failed,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Qr => "qr",
            SessionState::Connecting => "connecting",
            SessionState::Connected => "connected",
            SessionState::Disconnected => "disconnected",
            SessionState::LoggedOut => "logged_out",
            SessionState::Banned => "banned",
            SessionState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "qr" => SessionState::Qr,
            "connecting" => SessionState::Connecting,
            "connected" => SessionState::Connected,
            "disconnected" => SessionState::Disconnected,
            "logged_out" => SessionState::LoggedOut,
            "banned" => SessionState::Banned,
            "failed" => SessionState::Failed,
            _ => SessionState::Pending,
        }
    }
}

/// A session's live state, as watchers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub state: SessionState,
    pub reason: Option<String>,
    /// The current pairing QR code and when it rotates.
    pub qr: Option<(String, i64)>,
    pub pairing_code: Option<(String, i64)>,
    pub phone: Option<String>,
    pub push_name: Option<String>,
    pub last_connected_at: Option<i64>,
    /// The node of the cluster that runs the session.
    pub node: Option<String>,
}

/// What the domain may ask of a running session. Every method takes the id of a stored
/// session (the domain has checked it and its owner first).
///
/// "Running" means the implementation holds the session: its client is connecting,
/// connected, reconnecting with back-off, or stopped in a terminal state it reached by
/// itself (logged out from the phone, replaced, banned, client outdated, QR codes
/// exhausted). A session in a terminal state stays running until it is stopped, so its last
/// state and reason stay visible; `start` leaves it as it is, `restart` runs it afresh.
///
/// A session's state is stored before it is shown (see `supervisor::persist_state`), so
/// when no live state is available the stored row is the truth; callers fall back to it.
#[async_trait::async_trait]
pub trait SessionControl: Send + Sync + 'static {
    /// Runs the session if it is not running; idempotent (a running session, terminal or
    /// not, is left alone). Answers once the session is running, not once it is connected;
    /// its first state comes from storage (`connecting` if it has a linked account,
    /// `pending` otherwise). `DeviceNotFound` when no stored session has this id.
    async fn start(&self, device_id: &str) -> Result<()>;

    /// Stops the session's client gracefully (aborting it after a bounded wait) and keeps
    /// its device store and its stored state. Idempotent; nothing to do when it is not
    /// running. Once it answers, the session is not running (`snapshot` is `None`).
    async fn stop(&self, device_id: &str) -> Result<()>;

    /// Stops, then starts the session (its restart back-off starts over). Brings back a
    /// session in a terminal state. `DeviceNotFound` when no stored session has this id.
    async fn restart(&self, device_id: &str) -> Result<()>;

    /// The live state of the session, its current QR code included (`qr`, with the time it
    /// rotates, while the state is `qr`); `None` when the session is not running, and then
    /// the caller reports the stored state. Never fails: a live state that cannot be had is
    /// `None`.
    async fn snapshot(&self, device_id: &str) -> Option<Snapshot>;

    /// The live state now, then every change (state, reason, QR rotation, account), in
    /// order; a slow reader sees the latest value, not every intermediate one. The channel
    /// closes once the session stops running. `None` when the session is not running.
    async fn watch(&self, device_id: &str) -> Option<watch::Receiver<Snapshot>>;

    /// Asks WhatsApp for an 8-character code that links the session to the phone number
    /// `phone` (digits of an international number, already normalized). Starts the session
    /// if needed (`DeviceNotFound` as `start`), waits a bounded time for its client and for
    /// WhatsApp, and answers `WhatsAppUnavailable` when either does not come. Not
    /// idempotent: each call asks for a new code. The code also shows in the live state
    /// (`pairing_code`, valid three minutes) until the session connects.
    async fn pairing_code(&self, device_id: &str, phone: &str) -> Result<String>;

    /// Logs the linked device out: tells WhatsApp when a client is up (bounded, best
    /// effort), stops the session, wipes its device store and stores it as `logged_out`
    /// ("logged out by request") with its account cleared. Works whether or not it is
    /// running, and again on a session already logged out.
    async fn logout(&self, device_id: &str) -> Result<()>;

    /// Logs the session out (as `logout`), then removes its stored row.
    async fn delete(&self, device_id: &str) -> Result<()>;

    /// Asks WhatsApp (usync) which of `phones` (normalized digits, at most
    /// [`MAX_NUMBERS_PER_QUERY`]) have an account, through the connected session; bounded in
    /// time. Answers `(phone, on WhatsApp)` for each number WhatsApp answered about (a number
    /// missing from the answer is unknown). `WhatsAppUnavailable` when the session is not
    /// connected (it is not started for this).
    async fn check_numbers(
        &self,
        device_id: &str,
        phones: &[String],
    ) -> Result<Vec<(String, bool)>>;

    /// A message was queued for the session: a hint to send now rather than at the next
    /// poll. Never blocks, never fails; nothing happens when the session is not running
    /// (whoever runs it finds the message by polling).
    fn notify_outbound(&self, device_id: &str);
}

/// The sessions as the domain holds them, wherever they run. Cheap to clone.
#[derive(Clone)]
pub struct SessionClient(Arc<dyn SessionControl>);

impl SessionClient {
    pub fn new(instance: impl SessionControl) -> Self {
        SessionClient(Arc::new(instance))
    }
}

impl Deref for SessionClient {
    type Target = dyn SessionControl;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}
