//! The Noise handshake's outcome: the client payload decides between
//! registration (a new device, handed to [`super::pairing`]) and login. This
//! file owns the version gate (`<failure reason="405">`), parking logins while
//! the admin holds them, and the login checks against the account, the device
//! and its Noise key that end in `<success>` or `<failure>`, and the
//! replacement of a device's older connection by its newer login.

use std::time::Instant;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;

use super::Sim;
use crate::conns::EndReason;
use crate::state::{Account, HeldLogin, State, now_secs};

impl Sim {
    pub fn on_client_payload(&self, conn: u64, client_static: &[u8; 32], p: &wa::ClientPayload) {
        {
            let mut st = self.lock();
            if Self::refuse_outdated(&st, conn, p) {
                return;
            }
            if p.device_pairing_data.as_option().is_none()
                && let Some(held) = st.held_logins.as_mut()
            {
                held.push(HeldLogin {
                    conn,
                    client_static: *client_static,
                    payload: p.clone(),
                });
                return;
            }
        }
        if let Some(reg) = p.device_pairing_data.as_option() {
            self.begin_registration(conn, client_static, p, reg);
        } else {
            self.login(conn, client_static, p);
        }
    }

    /// Closes `conn` with `<failure reason="405">` if its client is older than
    /// the admin's minimum version; returns whether it did.
    fn refuse_outdated(st: &State, conn: u64, p: &wa::ClientPayload) -> bool {
        let Some(min) = st.min_version else {
            return false;
        };
        let v = p.user_agent.app_version.as_option();
        let part = |f: fn(&wa::client_payload::user_agent::AppVersion) -> Option<u32>| {
            v.and_then(f).unwrap_or(0)
        };
        let version = (
            part(|v| v.primary),
            part(|v| v.secondary),
            part(|v| v.tertiary),
        );
        if version >= min {
            return false;
        }
        tracing::info!("conn {conn}: client version {version:?} is outdated");
        let node = NodeBuilder::new("failure").attr("reason", 405u32).build();
        Self::close(st, conn, Some(node), EndReason::LoginRefused);
        true
    }

    pub(super) fn login(&self, conn: u64, client_static: &[u8; 32], p: &wa::ClientPayload) {
        let phone = p.username.map(|u| u.to_string()).unwrap_or_default();
        let dev = p.device.unwrap_or(0) as u16;
        let mut st = self.lock();
        let failure = |reason: u32| NodeBuilder::new("failure").attr("reason", reason).build();
        let Some(acc) = st.accounts.get_mut(&phone) else {
            tracing::info!("login for unknown account {phone}:{dev}");
            Self::close(&st, conn, Some(failure(401)), EndReason::LoginRefused);
            return;
        };
        if let Some(banned) = ban_failure(acc) {
            Self::close(&st, conn, Some(banned), EndReason::LoginRefused);
            return;
        }
        let lid = acc.lid.clone();
        let Some(device) = acc.devices.get_mut(&dev) else {
            tracing::info!("login for removed device {phone}:{dev}");
            Self::close(&st, conn, Some(failure(401)), EndReason::LoginRefused);
            return;
        };
        if &device.keys.noise_pub != client_static {
            tracing::warn!("login for {phone}:{dev} with a foreign noise key");
            Self::close(&st, conn, Some(failure(401)), EndReason::LoginRefused);
            return;
        }
        let old = device.conn.replace(conn);
        device.last_seen = Some(now_secs());
        if let Some(old) = old.filter(|o| *o != conn) {
            // The newer connection wins, as on the real service: the older one
            // is told it was replaced (whatsapp-rust: `StreamReplaced`, and no
            // reconnect) and closed.
            tracing::info!("conn {conn} replaces conn {old} of {phone}:{dev}");
            let replaced = NodeBuilder::new("stream:error")
                .children([NodeBuilder::new("conflict")
                    .attr("type", "replaced")
                    .build()])
                .build();
            Self::close(&st, old, Some(replaced), EndReason::Replaced);
            st.conn_log.replaced(old, conn);
        }
        if let Some(c) = st.conns.get_mut(&conn) {
            c.user = Some((phone.clone(), dev));
        }
        st.conn_log
            .logged_in(conn, Jid::pn_device(phone.clone(), dev).to_string());
        let success = NodeBuilder::new("success")
            .attr("t", now_secs())
            .attr("props", "1")
            .attr("creation", now_secs())
            .attr("location", "sim")
            .attr("lid", Jid::lid_device(lid, dev))
            .attr("display_name", "")
            .build();
        Self::send(&st, conn, success);
    }
}

/// `<failure reason="402">` while the account is banned; a ban that has run
/// out is lifted.
fn ban_failure(acc: &mut Account) -> Option<Node> {
    let until = acc.banned_until?;
    let now = Instant::now();
    if until > now {
        let left = (until - now).as_secs().max(1);
        return Some(
            NodeBuilder::new("failure")
                .attr("reason", 402u32)
                .attr("code", 101u32)
                .attr("expire", left)
                .build(),
        );
    }
    acc.banned_until = None;
    None
}
