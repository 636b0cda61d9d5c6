//! The SAK self-hosted API (`/api/v1/auth`, `/api/v1/sessions`, `/api/v1/messages/*`,
//! `/api/v1/webhooks`), camelCase as its document shows, each group behind its per-address
//! limit.

pub mod auth;
pub mod messages;
pub mod sessions;
pub mod webhooks;

use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use utoipa_axum::router::OpenApiRouter;

use super::ratelimit::{self, IpLimiter};
use crate::domain::Gateway;

/// The per-address limits in front of the SAK surface: account creation and login, management,
/// messaging.
#[derive(Clone)]
pub struct Limits {
    pub general: Arc<IpLimiter>,
    pub auth: Arc<IpLimiter>,
    pub messaging: Arc<IpLimiter>,
}

impl Limits {
    pub fn from_env(gw: &Gateway) -> Self {
        let (general, auth, messaging) = IpLimiter::from_env(&gw.settings().http.trusted_proxies);
        Limits {
            general,
            auth,
            messaging,
        }
    }
}

/// Behind `limiter`'s per-address limit.
pub fn limited(r: OpenApiRouter<Gateway>, limiter: &Arc<IpLimiter>) -> OpenApiRouter<Gateway> {
    r.layer(from_fn_with_state(limiter.clone(), ratelimit::limit))
}

/// The SAK routes with their OpenAPI operations.
pub fn routes(limits: &Limits) -> OpenApiRouter<Gateway> {
    let open = limited(auth::open_routes(), &limits.auth);
    let manage = limited(
        auth::account_routes()
            .merge(sessions::routes())
            .merge(webhooks::routes()),
        &limits.general,
    );
    let messaging = limited(
        messages::routes().merge(webhooks::test_routes()),
        &limits.messaging,
    );
    open.merge(manage).merge(messaging)
}
