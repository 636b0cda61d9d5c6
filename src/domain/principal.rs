//! Who a call acts as, once a transport's credential scheme has resolved it: the one value an
//! operation checks its scope against, whether it came over gRPC or was transcoded from REST.
//!
//! The transports resolve credentials (RK or Qontak signing, a JWT, a SAK key) and hand the
//! principal over as a request extension; what each kind of principal may do is decided here.

use std::sync::Arc;

use super::Gateway;
use super::accounts::User;
use super::auth::Caller;
use super::text::no_nul_opt;
use crate::error::{Error, Result};
use crate::storage::sessions::SessionRow;

/// What a session-scoped credential may not do.
const SESSION_KEY_SCOPE: &str =
    "a session API key acts only for its own session; use the account's JWT or a user API key";

#[derive(Clone)]
pub enum Principal {
    /// A signed request (RK or Mekari/Qontak scheme): the whole project.
    Project(Caller),
    /// The account's JWT: the whole project, and the account itself (its keys, its
    /// credentials).
    Account { caller: Caller, user: Arc<User> },
    /// A user API key: the whole project, but not the account.
    UserKey(Caller),
    /// A session API key, or a user key acting for one named session: that session only.
    Session {
        caller: Caller,
        session: Arc<SessionRow>,
    },
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Principal::Project(_) => "project",
            Principal::Account { .. } => "account",
            Principal::UserKey(_) => "user_key",
            Principal::Session { .. } => "session",
        };
        f.debug_struct("Principal")
            .field("kind", &kind)
            .field("project_id", &self.caller().project.row.id)
            .finish()
    }
}

impl Principal {
    /// The project the call is made in.
    pub fn caller(&self) -> &Caller {
        match self {
            Principal::Project(c) | Principal::UserKey(c) => c,
            Principal::Account { caller, .. } | Principal::Session { caller, .. } => caller,
        }
    }

    /// For managing the project's sessions and webhooks: a session-scoped credential is
    /// refused.
    pub fn manager(&self) -> Result<&Caller> {
        match self {
            Principal::Session { .. } => Err(Error::Forbidden(SESSION_KEY_SCOPE)),
            other => Ok(other.caller()),
        }
    }

    /// For reading one session (its status, its QR): a session-scoped credential only its own.
    pub fn reader_of(&self, session_id: &str) -> Result<&Caller> {
        match self {
            Principal::Session { session, .. } if session.id != session_id => {
                Err(Error::Forbidden(SESSION_KEY_SCOPE))
            }
            other => Ok(other.caller()),
        }
    }

    /// For operations on the account itself: only its JWT.
    pub fn account(&self) -> Result<&User> {
        match self {
            Principal::Account { user, .. } => Ok(user),
            _ => Err(Error::NoToken),
        }
    }

    /// The session a messaging call acts for: a session-scoped credential's own (a name given
    /// beside it is ignored), else the one named, which must be in the project.
    pub async fn acting_session(
        &self,
        gw: &Gateway,
        session_id: Option<&str>,
    ) -> Result<Arc<SessionRow>> {
        if let Principal::Session { session, .. } = self {
            return Ok(session.clone());
        }
        no_nul_opt("session id", session_id)?;
        let id = session_id
            .filter(|s| !s.is_empty())
            .ok_or(Error::SessionIdRequired)?;
        let row = gw.own_session(self.caller(), id).await?;
        Ok(Arc::new(row))
    }

    /// This principal narrowed to the session it acts for (see [`Self::acting_session`]).
    pub async fn for_session(self, gw: &Gateway, session_id: Option<&str>) -> Result<Principal> {
        let session = self.acting_session(gw, session_id).await?;
        Ok(Principal::Session {
            caller: self.caller().clone(),
            session,
        })
    }

    /// Whether the call was made with a SAK credential (JWT or SAK key), whose phone numbers
    /// follow the SAK rules (non-digits stripped, a 10-digit number gets the default country
    /// code) rather than RK's strict digits.
    pub fn uses_sak_numbers(&self) -> bool {
        !matches!(self, Principal::Project(_))
    }
}

impl Gateway {
    /// The principal of a SAK bearer token (the account's JWT).
    pub async fn principal_for_token(&self, token: &str) -> Result<Principal> {
        let user = self.user_from_token(token).await?;
        let caller = self.caller_for_user(&user).await?;
        Ok(Principal::Account {
            caller,
            user: Arc::new(user),
        })
    }
}
