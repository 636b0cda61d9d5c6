//! The HTTP client webhooks go out through: HTTP/1.1 with keep-alive, rustls with the Mozilla
//! roots, no redirects, a timeout per request, and a resolver that drops private addresses
//! (unless allowed) so a public name cannot be pointed at an internal service.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{Settings, is_public};
use crate::error::{Error, Result};

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err("the receiver's host resolves to no allowed (public) address".into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// ring as the process's rustls provider (the only one compiled in), so that any reqwest
/// client in the process — ours or an embedding application's — can be built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client(settings: &Settings) -> Result<reqwest::Client> {
    install_crypto_provider();
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(Error::internal)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: settings.allow_private,
        }))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .pool_max_idle_per_host(settings.per_webhook_concurrency.max(1))
        .user_agent(concat!("wagate-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Error::internal)
}
