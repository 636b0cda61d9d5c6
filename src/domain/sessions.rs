//! Session operations for both transports: a session is an RK device, addressed by its id.

use tokio::sync::watch;

use super::Gateway;
use super::auth::Caller;
use super::text::{no_nul, no_nul_opt};
use super::webhooks::CreatedWebhook;
use crate::crypto;
use crate::error::{Error, Result};
use crate::sessions::{SessionState, Snapshot};
use crate::storage::now_ms;
use crate::storage::sessions::{self as store, DeviceRow, NewSession, SessionRow};
use crate::storage::webhooks::WebhookRow;
use crate::values::{MessageStatus, SessionId};

#[derive(Debug, Clone)]
pub struct SessionView {
    pub session_id: SessionId,
    pub device_code: String,
    pub name: String,
    pub state: SessionState,
    pub reason: Option<String>,
    pub phone: Option<String>,
    pub push_name: Option<String>,
    pub last_connected_at: Option<i64>,
    pub created_at: i64,
    /// The node of the cluster that runs it now.
    pub owner_node: Option<String>,
}

impl SessionView {
    fn new(row: SessionRow, live: Option<Snapshot>) -> Self {
        let (state, reason) = match &live {
            Some(s) => (s.state, s.reason.clone()),
            None => (SessionState::parse(&row.state), row.state_reason.clone()),
        };
        SessionView {
            session_id: row.id,
            device_code: row.code,
            name: row.name,
            state,
            reason,
            phone: live.as_ref().and_then(|s| s.phone.clone()).or(row.phone),
            push_name: live
                .as_ref()
                .and_then(|s| s.push_name.clone())
                .or(row.push_name),
            last_connected_at: live
                .as_ref()
                .and_then(|s| s.last_connected_at)
                .or(row.last_connected_at),
            created_at: row.created_at,
            owner_node: live.and_then(|s| s.node),
        }
    }
}

/// A session just created, with its API key and its webhook (each secret shown only here).
#[derive(Debug, Clone)]
pub struct CreatedSession {
    pub session: SessionView,
    pub api_key: String,
    pub webhook: Option<CreatedWebhook>,
}

/// A pairing code to type on the phone, valid until `expires_at` (epoch ms).
#[derive(Debug, Clone)]
pub struct PairingCode {
    pub code: String,
    pub expires_at: i64,
}

/// A running session and a watch on its live state.
pub struct SessionWatch {
    pub session: SessionRow,
    pub changes: watch::Receiver<Snapshot>,
}

#[derive(Debug, Clone)]
pub struct QrView {
    pub code: Option<String>,
    pub expires_at: Option<i64>,
    pub connected: bool,
}

impl Gateway {
    pub(crate) async fn own_session(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<SessionRow> {
        no_nul("session id", session_id)?;
        let id = SessionId::from(session_id);
        let row = self.db().run(move |c| store::get(c, &id)).await?;
        match row {
            Some(r) if r.project_id == caller.project.row.id => Ok(r),
            _ => Err(Error::SessionNotFound),
        }
    }

    /// Creates a session with its own API key and, optionally, a webhook (`{url, events}`)
    /// of its own, within the project's session cap. A bad webhook is refused before anything
    /// exists; the key and the webhook are stored with the session, before it starts, so the
    /// webhook gets the session's very first event. The key and the webhook's secret are
    /// returned only here.
    pub async fn create_session(
        &self,
        caller: &Caller,
        name: Option<String>,
        device_code: Option<String>,
        webhook: Option<(&str, &[String])>,
    ) -> Result<CreatedSession> {
        no_nul_opt("name", name.as_deref())?;
        no_nul_opt("device code", device_code.as_deref())?;
        let hook = match webhook {
            None => None,
            Some((url, events)) => {
                no_nul("webhook url", url)?;
                Some(self.new_webhook(caller, url, events)?)
            }
        };
        if let Some(c) = &device_code
            && !super::admin::valid_device_code(c)
        {
            return Err(Error::InvalidRequest(
                "device code must be 3 to 64 characters of letters, digits, '-' or '_'".into(),
            ));
        }
        let api_key = crypto::random_token("sess_");
        let key_hash = crypto::hash_api_key(&api_key);
        let explicit = device_code.is_some();
        let mut created = None;
        // A generated code may collide (1 in 10^9): try a few times.
        for _ in 0..5 {
            let code = device_code
                .clone()
                .unwrap_or_else(super::admin::generate_device_code);
            let device = DeviceRow {
                id: SessionId::new(uuid::Uuid::now_v7().to_string()),
                project_id: caller.project.row.id.clone(),
                name: name.clone().unwrap_or_else(|| code.clone()),
                code,
                state: SessionState::Pending.as_str().to_owned(),
                created_at: now_ms(),
            };
            let webhook = hook.as_ref().map(|h| WebhookRow {
                device_id: Some(device.id.clone()),
                ..h.row.clone()
            });
            let new = NewSession {
                device,
                key_hash: key_hash.clone(),
                webhook,
            };
            let id = new.device.id.clone();
            match self.db().run(move |c| store::create_capped(c, &new)).await {
                Ok(()) => {
                    created = Some(id);
                    break;
                }
                Err(Error::DeviceCodeTaken) if !explicit => continue,
                Err(e) => return Err(e),
            }
        }
        let id = created.ok_or(Error::DeviceCodeTaken)?;
        self.sessions().start(&id).await?;
        Ok(CreatedSession {
            session: self.get_session(caller, &id).await?,
            api_key,
            webhook: hook.map(|h| CreatedWebhook {
                webhook: WebhookRow {
                    device_id: Some(id),
                    ..h.row
                }
                .into(),
                secret: h.secret,
            }),
        })
    }

    pub async fn list_sessions(&self, caller: &Caller) -> Result<Vec<SessionView>> {
        let pid = caller.project.row.id.clone();
        let rows = self.db().run(move |c| store::list(c, &pid)).await?;
        let live =
            futures::future::join_all(rows.iter().map(|r| self.sessions().snapshot(&r.id))).await;
        Ok(rows
            .into_iter()
            .zip(live)
            .map(|(r, live)| SessionView::new(r, live))
            .collect())
    }

    pub async fn get_session(&self, caller: &Caller, session_id: &str) -> Result<SessionView> {
        let row = self.own_session(caller, session_id).await?;
        let live = self.sessions().snapshot(&row.id).await;
        Ok(SessionView::new(row, live))
    }

    /// The current QR code; starts the session when it is not running yet.
    pub async fn session_qr(&self, caller: &Caller, session_id: &str) -> Result<QrView> {
        let row = self.own_session(caller, session_id).await?;
        self.sessions().start(&row.id).await?;
        let s = self.sessions().snapshot(&row.id).await.unwrap_or_default();
        Ok(QrView {
            code: s.qr.as_ref().map(|q| q.0.clone()),
            expires_at: s.qr.map(|q| q.1),
            connected: s.state == SessionState::Connected,
        })
    }

    pub async fn request_pairing_code(
        &self,
        caller: &Caller,
        session_id: &str,
        phone: &str,
    ) -> Result<PairingCode> {
        no_nul("phone number", phone)?;
        let row = self.own_session(caller, session_id).await?;
        let phone =
            super::messaging::normalize_recipient(phone).map_err(|_| Error::InvalidPhoneNumber)?;
        let code = self.sessions().pairing_code(&row.id, &phone).await?;
        Ok(PairingCode {
            code,
            expires_at: now_ms() + 180_000,
        })
    }

    pub async fn logout_session(&self, caller: &Caller, session_id: &str) -> Result<SessionView> {
        let row = self.own_session(caller, session_id).await?;
        self.sessions().logout(&row.id).await?;
        self.get_session(caller, session_id).await
    }

    pub async fn delete_session(&self, caller: &Caller, session_id: &str) -> Result<()> {
        let row = self.own_session(caller, session_id).await?;
        self.sessions().delete(&row.id).await
    }

    pub async fn restart_session(&self, caller: &Caller, session_id: &str) -> Result<SessionView> {
        let row = self.own_session(caller, session_id).await?;
        self.sessions().restart(&row.id).await?;
        self.get_session(caller, session_id).await
    }

    /// State changes and QR rotations of a session (started if needed).
    pub async fn watch_session(&self, caller: &Caller, session_id: &str) -> Result<SessionWatch> {
        let row = self.own_session(caller, session_id).await?;
        self.sessions().start(&row.id).await?;
        let rx = self
            .sessions()
            .watch(&row.id)
            .await
            .ok_or_else(|| Error::WhatsAppUnavailable("the session is not running".into()))?;
        Ok(SessionWatch {
            session: row,
            changes: rx,
        })
    }
}

/// One message of a session's history, either direction.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub id: String,
    pub direction: &'static str,
    pub wa_message_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub kind: String,
    pub text: Option<String>,
    pub status: Option<MessageStatus>,
    pub push_name: Option<String>,
    pub at: i64,
}

/// History pages stay bounded: offsets past this are refused.
const MAX_HISTORY_OFFSET: i64 = 5_000;

impl Gateway {
    /// What the session sent and received through the gateway, newest first.
    pub async fn session_history(
        &self,
        caller: &Caller,
        session_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<HistoryItem>> {
        if !(1..=200).contains(&limit) || !(0..=MAX_HISTORY_OFFSET).contains(&offset) {
            return Err(Error::InvalidRequest(format!(
                "limit must be 1..200 and offset 0..{MAX_HISTORY_OFFSET}"
            )));
        }
        let row = self.own_session(caller, session_id).await?;
        let (id, code, pid, phone) = (
            row.id.clone(),
            row.code.clone(),
            row.project_id.clone(),
            row.phone.clone(),
        );
        let n = limit + offset;
        let (inbound, outbound) = self
            .db()
            .run(move |c| {
                let inbound = crate::storage::inbound::list_inbound(c, &id, n, 0)?;
                let filter = crate::storage::messages::ListFilter {
                    device_code: Some(code),
                    limit: n,
                    ..Default::default()
                };
                let outbound = crate::storage::messages::list(c, &pid, &filter)?;
                Ok((inbound, outbound))
            })
            .await?;
        let mut items: Vec<HistoryItem> = inbound
            .into_iter()
            .map(|m| HistoryItem {
                id: m.id,
                direction: "inbound",
                wa_message_id: Some(m.wa_message_id),
                from: m.sender_phone.or(Some(m.sender_jid)),
                to: phone.clone(),
                kind: m.kind,
                text: m.body,
                status: None,
                push_name: m.push_name,
                at: m.sent_at,
            })
            .chain(outbound.into_iter().map(|m| HistoryItem {
                id: m.id,
                direction: "outbound",
                wa_message_id: m.wa_message_id,
                from: phone.clone(),
                to: Some(m.recipient),
                kind: m.kind,
                text: m.body,
                status: Some(m.status),
                push_name: None,
                at: m.created_at,
            }))
            .collect();
        items.sort_by_key(|i| std::cmp::Reverse(i.at));
        Ok(items
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect())
    }
}
