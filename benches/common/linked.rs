//! A gateway process with sessions linked at wasim, for the benchmarks that need WhatsApp
//! sessions (sessions, latency): the process wrapper, the project's signed gRPC calls, and
//! linking a session by QR.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use wagate::client;
use wagate::proto::v1::sessions_service_client::SessionsServiceClient;
use wagate::proto::v1::{
    CreateSessionRequest, GetQrCodeRequest, GetSessionRequest, Session, SessionState,
};

use crate::process::{GATEWAY, spawn_gateway, tail};

pub type Sessions = SessionsServiceClient<tonic::transport::Channel>;

/// The gateway process; killed (SIGKILL) when dropped, so a failing or panicking benchmark
/// never leaves it behind.
pub struct Gateway {
    child: Option<Child>,
    pub addr: std::net::SocketAddr,
    log: PathBuf,
    #[allow(dead_code)] // the sessions benchmark times its restart from it
    pub started: Instant,
}

impl Gateway {
    /// `wagate serve` against wasim at `ws_url`, node `bench`, with `extra` flags.
    pub fn spawn(db_url: &str, key: &str, ws_url: &str, extra: &[&str], log: &Path) -> Gateway {
        let started = Instant::now();
        let mut flags = vec!["--whatsapp-url", ws_url, "--node-id", "bench"];
        flags.extend_from_slice(extra);
        let (child, addr) = spawn_gateway(db_url, key, &flags, log);
        Gateway {
            child: Some(child),
            addr,
            log: log.to_owned(),
            started,
        }
    }

    #[allow(dead_code)] // the sessions benchmark reads its RSS
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    pub fn check_alive(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "the gateway exited with {status}; its log:\n{}",
                tail(&self.log)
            );
        }
    }

    /// Waits until the gateway answers gRPC, at most 30 s.
    pub async fn connect(&mut self) -> Sessions {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}", self.addr);
        loop {
            self.check_alive();
            if let Ok(ch) = tonic::transport::Channel::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
            {
                return SessionsServiceClient::new(ch);
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not listen within 30 s; its log:\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for a graceful exit (at most 30 s, then SIGKILL).
    pub fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the gateway did not stop within 30 s of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
        t0.elapsed()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A project's RK / gRPC credentials.
#[derive(Clone)]
pub struct Project {
    pub api_key: String,
    pub api_secret: String,
}

/// A project call to `/<service>/<method>`, signed over its encoded body.
pub fn signed<T: Message>(p: &Project, service: &str, method: &str, msg: T) -> tonic::Request<T> {
    let ts = client::unix_now();
    let path = format!("/{service}/{method}");
    let sig = client::grpc_signature(&p.api_key, &p.api_secret, &ts, &path, &msg.encode_to_vec());
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert("x-api-key", p.api_key.parse().unwrap());
    md.insert("x-timestamp", ts.parse().unwrap());
    md.insert("x-signature", sig.parse().unwrap());
    req
}

const SESSIONS: &str = "wagate.v1.SessionsService";

/// `wagate project create --json` on the benchmark's database, with `extra` flags (limits).
pub fn create_project(db_url: &str, key: &str, name: &str, extra: &[&str]) -> Project {
    let out = Command::new(GATEWAY)
        .args(["project", "create", "--json", "--name", name])
        .args(extra)
        .args(["--database-url", db_url, "--master-key", key])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("wagate project create");
    assert!(
        out.status.success(),
        "wagate project create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("project JSON");
    Project {
        api_key: v["api_key"].as_str().expect("api_key").into(),
        api_secret: v["api_secret"].as_str().expect("api_secret").into(),
    }
}

/// Creates session `bench-<i>`, waits for its QR, has wasim's phone `phone` scan it and waits
/// until the session reports connected (each wait at most 60 s). Returns the session and how
/// long that took.
pub async fn link(
    mut c: Sessions,
    p: &Project,
    admin: &wasim::client::Admin,
    i: usize,
    phone: String,
) -> (Session, Duration) {
    let t0 = Instant::now();
    let s = c
        .create_session(signed(
            p,
            SESSIONS,
            "CreateSession",
            CreateSessionRequest {
                name: format!("bench-{i}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("CreateSession {i}: {e}"))
        .into_inner()
        .session
        .expect("session");
    let id = s.session_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    let qr = loop {
        let q = c
            .get_qr_code(signed(
                p,
                SESSIONS,
                "GetQrCode",
                GetQrCodeRequest {
                    session_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("GetQrCode {i}: {e}"))
            .into_inner();
        if !q.qr_code.is_empty() {
            break q.qr_code;
        }
        assert!(Instant::now() < deadline, "no QR for session {i} in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    admin
        .scan(&qr, &phone)
        .await
        .unwrap_or_else(|e| panic!("scan for session {i}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = c
            .get_session(signed(
                p,
                SESSIONS,
                "GetSession",
                GetSessionRequest {
                    session_id: id.clone(),
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("GetSession {i}: {e}"))
            .into_inner()
            .session
            .expect("session");
        if s.state == SessionState::Connected as i32 {
            return (s, t0.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "session {i} not connected 60 s after the scan (state {}, {})",
            s.state,
            s.reason
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
