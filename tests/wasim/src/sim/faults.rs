//! Faults the admin API injects, as the real service shows them to clients:
//! dropped connections (kick), unlinked devices (logout, stream error 401), a
//! temporary ban (`<failure reason="402">` at login), logins left unanswered
//! (a slow service) and a minimum client version (`reason="405"`).

use std::time::{Duration, Instant};

use wacore_binary::builder::NodeBuilder;

use super::Sim;
use crate::conns::EndReason;
use crate::state::Device;

impl Sim {
    /// Drops every connection of the account; its clients reconnect by themselves.
    pub fn kick(&self, phone: &str) -> Result<usize, String> {
        let st = self.lock();
        let acc = st.accounts.get(phone).ok_or("no such account")?;
        let conns: Vec<u64> = acc.devices.values().filter_map(|d| d.conn).collect();
        for c in &conns {
            Self::close(&st, *c, None, EndReason::Kicked);
        }
        Ok(conns.len())
    }

    /// Unlinks every device of the account: connected ones get stream error
    /// 401, and their next login is refused.
    pub fn logout(&self, phone: &str) -> Result<usize, String> {
        let mut st = self.lock();
        let acc = st.accounts.get_mut(phone).ok_or("no such account")?;
        let devices: Vec<Device> = std::mem::take(&mut acc.devices).into_values().collect();
        for d in &devices {
            if let Some(c) = d.conn {
                let err = NodeBuilder::new("stream:error").attr("code", "401").build();
                Self::close(&st, c, Some(err), EndReason::LoggedOut);
            }
        }
        for d in &devices {
            self.notify_devices(&mut st, phone, d.id, "remove");
        }
        Ok(devices.len())
    }

    /// Holds every login unanswered (`true`), or answers the held ones in order and
    /// stops holding (`false`): a service too slow to let sessions in, for a while.
    pub fn hold_logins(&self, hold: bool) {
        let held = {
            let mut st = self.lock();
            if hold {
                st.held_logins.get_or_insert_with(Vec::new);
                return;
            }
            st.held_logins.take().unwrap_or_default()
        };
        for h in held {
            if self.lock().conns.contains_key(&h.conn) {
                self.login(h.conn, &h.client_static, &h.payload);
            }
        }
    }

    /// Refuses clients older than `version` (`None` accepts every version), as
    /// WhatsApp refuses a client version it no longer supports.
    pub fn set_min_version(&self, version: Option<(u32, u32, u32)>) {
        self.lock().min_version = version;
    }

    /// Refuses the account's logins for `secs` seconds (0 lifts the ban) and
    /// drops its current connections.
    pub fn ban(&self, phone: &str, secs: u64) -> Result<(), String> {
        let mut st = self.lock();
        let acc = st.accounts.get_mut(phone).ok_or("no such account")?;
        acc.banned_until = Some(Instant::now() + Duration::from_secs(secs));
        let conns: Vec<u64> = acc.devices.values().filter_map(|d| d.conn).collect();
        for c in conns {
            Self::close(&st, c, None, EndReason::Banned);
        }
        Ok(())
    }
}
