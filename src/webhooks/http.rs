//! The HTTP client webhooks go out through, and broadcast header media is fetched through:
//! HTTP/1.1 with keep-alive, rustls with the Mozilla roots, no redirects, no proxy, a timeout
//! per request — and, unless private receivers are allowed, the address guard
//! ([`is_public`]), so neither a stored URL nor a public name pointed at an internal service
//! reaches one. [`Client`] is the only way out, and it checks
//! every address before anything is sent to it:
//! - a literal IP in the URL before the request starts (reqwest does not resolve literals);
//! - the addresses a host name resolves to, when reqwest resolves it (non-public ones are
//!   dropped, so a name with public and private addresses uses only the public ones);
//! - the peer of every connection reqwest opens, before the request is written to it: the
//!   check that holds whatever path reqwest takes to a connection.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connection, HttpInfo};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{Settings, is_public};
use crate::error::{Error, Result};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the guard refused a receiver address, as the delivery log shows it: never the URL
/// (its query may carry a receiver's token), nor an address a name resolved to.
#[derive(Debug)]
pub struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused: {} (receivers on loopback, private or reserved addresses need \
             WAGATE_WEBHOOK_ALLOW_PRIVATE=true)",
            self.0
        )
    }
}

impl std::error::Error for Refused {}

fn check(ip: IpAddr) -> std::result::Result<(), Refused> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(Refused(format!("{ip} is not a public address")))
    }
}

/// The webhook client (see the module docs).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    allow_private: bool,
}

impl Client {
    /// A POST to `url`, or the guard's refusal when its host is a literal non-public address.
    pub fn post(&self, url: &str) -> std::result::Result<reqwest::RequestBuilder, Refused> {
        self.literal_checked(url)?;
        Ok(self.http.post(url))
    }

    /// A GET of `url` (a broadcast template's header media), guarded as [`Client::post`].
    pub fn get(&self, url: &str) -> std::result::Result<reqwest::RequestBuilder, Refused> {
        self.literal_checked(url)?;
        Ok(self.http.get(url))
    }

    fn literal_checked(&self, url: &str) -> std::result::Result<(), Refused> {
        if !self.allow_private
            && let Ok(u) = reqwest::Url::parse(url)
        {
            match u.host() {
                Some(url::Host::Ipv4(ip)) => check(IpAddr::V4(ip))?,
                Some(url::Host::Ipv6(ip)) => check(IpAddr::V6(ip))?,
                _ => {}
            }
        }
        Ok(())
    }
}

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                // Without the addresses: they may be internal ones the caller should not learn.
                return Err(Box::new(Refused(
                    "the receiver's host resolves to no public address".into(),
                )) as BoxError);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Checks the peer address of each new connection (see the module docs); a connection whose
/// peer is unknown or is a proxy is refused too, as its real destination cannot be checked.
#[derive(Clone)]
struct PeerGuardLayer;

impl<S> tower::Layer<S> for PeerGuardLayer {
    type Service = PeerGuard<S>;
    fn layer(&self, inner: S) -> PeerGuard<S> {
        PeerGuard { inner }
    }
}

#[derive(Clone)]
struct PeerGuard<S> {
    inner: S,
}

impl<S, R> tower::Service<R> for PeerGuard<S>
where
    S: tower::Service<R>,
    S::Response: Connection + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let conn = connecting.await.map_err(Into::into)?;
            peer_allowed(&conn)?;
            Ok(conn)
        })
    }
}

fn peer_allowed(conn: &impl Connection) -> std::result::Result<(), Refused> {
    let connected = conn.connected();
    if connected.is_proxied() {
        return Err(Refused("a connection through a proxy".into()));
    }
    let mut extras = axum::http::Extensions::new();
    connected.get_extras(&mut extras);
    match extras.get::<HttpInfo>() {
        Some(info) if is_public(info.remote_addr().ip()) => Ok(()),
        Some(_) => Err(Refused(
            "the connection's peer is not a public address".into(),
        )),
        None => Err(Refused("a connection whose peer address is unknown".into())),
    }
}

/// ring as the process's rustls provider (the only one compiled in), so that any reqwest
/// client in the process — ours or an embedding application's — can be built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client(settings: &Settings) -> Result<Client> {
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
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: settings.allow_private,
        }))
        // A proxy would connect for us, to a destination the guard never sees.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .pool_max_idle_per_host(settings.per_webhook_concurrency.max(1))
        .user_agent(concat!("wagate-webhooks/", env!("CARGO_PKG_VERSION")));
    if !settings.allow_private {
        builder = builder.connector_layer(PeerGuardLayer);
    }
    Ok(Client {
        http: builder.build().map_err(Error::internal)?,
        allow_private: settings.allow_private,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A loopback HTTP server answering 200; counts connections and request bytes.
    async fn server() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (conns, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, b) = (conns.clone(), bytes.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        b.fetch_add(n, Ordering::SeqCst);
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await;
                        }
                    }
                });
            }
        });
        (addr, conns, bytes)
    }

    fn settings(allow_private: bool) -> Settings {
        Settings {
            allow_private,
            timeout: std::time::Duration::from_secs(5),
            ..Settings::default()
        }
    }

    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            out = format!("{out}: {s}");
            source = s.source();
        }
        out
    }

    #[tokio::test]
    async fn literal_and_resolved_private_receivers_are_refused_before_connecting() {
        let (addr, conns, _) = server().await;
        let guarded = client(&settings(false)).unwrap();
        for url in [
            format!("http://{addr}/"),
            format!("http://[::ffff:127.0.0.1]:{}/", addr.port()),
        ] {
            let e = guarded.post(&url).unwrap_err().to_string();
            assert!(e.contains("is not a public address"), "{e}");
            assert!(e.contains("WAGATE_WEBHOOK_ALLOW_PRIVATE"), "{e}");
        }
        // A name: refused by the resolver, inside reqwest.
        let e = guarded
            .post(&format!("http://localhost:{}/?token=s3cret", addr.port()))
            .unwrap()
            .send()
            .await
            .unwrap_err();
        let e = chain(&e);
        assert!(e.contains("resolves to no public address"), "{e}");
        assert_eq!(
            conns.load(Ordering::SeqCst),
            0,
            "nothing reached the receiver"
        );

        // Allowed: the same receiver is reached.
        let open = client(&settings(true)).unwrap();
        let r = open.post(&format!("http://{addr}/")).unwrap().send().await;
        assert_eq!(r.unwrap().status(), 200);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    /// The backstop on its own: a connection to a non-public peer, however reqwest got there,
    /// is refused before a request byte is written to it.
    #[tokio::test]
    async fn the_peer_check_refuses_a_connection_to_a_private_peer() {
        // Unit tests run in any order: the process-wide provider may not be set yet.
        install_crypto_provider();
        let (addr, conns, bytes) = server().await;
        let bare = reqwest::Client::builder()
            .no_proxy()
            .connector_layer(PeerGuardLayer)
            .build()
            .unwrap();
        let e = bare
            .post(format!("http://{addr}/"))
            .body("secret payload")
            .send()
            .await
            .unwrap_err();
        let e = chain(&e);
        assert!(
            e.contains("the connection's peer is not a public address"),
            "{e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(conns.load(Ordering::SeqCst), 1, "it connected");
        assert_eq!(bytes.load(Ordering::SeqCst), 0, "but sent nothing");
    }

    /// The same over TLS: the peer address comes through rustls too (else every https
    /// receiver would be refused as "unknown"), and the refusal comes before the request.
    /// The certificate (127.0.0.1, valid until 2125) and its key exist for this test only.
    #[test]
    fn the_peer_check_sees_the_peer_of_a_tls_connection() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let cert = CertificateDer::from(&include_bytes!("testdata/loopback-cert.der")[..]);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            &include_bytes!("testdata/loopback-key.der")[..],
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone().into_owned()], key.clone_key())
            .unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // The TLS server in a thread: the handshake, then the application bytes it gets.
        let served = std::thread::spawn(move || {
            let (mut tcp, _) = l.accept().unwrap();
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut tls = rustls::ServerConnection::new(Arc::new(server)).unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut tcp).unwrap();
            }
            let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
            let mut got = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stream, &mut got);
            got.len()
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let bare = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connector_layer(PeerGuardLayer)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(bare.post(format!("https://{addr}/")).body("x").send())
            .unwrap_err();
        let e = chain(&e);
        assert!(
            e.contains("the connection's peer is not a public address"),
            "{e}"
        );
        drop((bare, rt));
        assert_eq!(served.join().unwrap(), 0, "no request over the connection");
    }
}
