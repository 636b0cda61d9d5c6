//! WhatsApp for the tests: wasim (the loopback server, with its admin API as the simulated
//! phone) and gateway sessions linked at it by QR over gRPC.

use std::sync::atomic::{AtomicU64, Ordering};
use wagate::proto::v1::sessions_service_client::SessionsServiceClient;
use wagate::proto::v1::{
    CreateSessionRequest, GetQrCodeRequest, GetSessionRequest, Session, SessionState,
};

use super::{TestProject, eventually, grpc_signed};

/// A running wasim and its admin API.
pub struct Sim {
    pub handle: wasim::ServerHandle,
    pub admin: wasim::client::Admin,
}

impl Sim {
    pub async fn start() -> Sim {
        let handle = wasim::Server::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("wasim");
        let admin = wasim::client::Admin::new(handle.addr());
        Sim { handle, admin }
    }

    /// What the gateway's sessions dial instead of WhatsApp.
    pub fn connector(&self) -> wagate::sessions::Connector {
        wagate::sessions::Connector {
            transport: std::sync::Arc::new(wasim::client::transport_factory(&self.handle.ws_url())),
            http: std::sync::Arc::new(wasim::client::SimHttpClient::new(self.handle.addr())),
            version: Some(wasim::client::CLIENT_VERSION),
        }
    }
}

/// A phone number no other session of this process links with.
pub fn next_phone() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "1555{:07}",
        9_000_000 + NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

const SVC: &str = "/wagate.v1.SessionsService/";

pub type Client = SessionsServiceClient<tonic::transport::Channel>;

pub async fn get(c: &mut Client, p: &TestProject, id: &str) -> Session {
    let req = grpc_signed(
        p,
        &format!("{SVC}GetSession"),
        GetSessionRequest {
            session_id: id.into(),
        },
    );
    c.get_session(req)
        .await
        .expect("get session")
        .into_inner()
        .session
        .expect("session")
}

pub async fn wait_state(
    c: &mut Client,
    p: &TestProject,
    id: &str,
    want: SessionState,
    secs: u64,
) -> Session {
    let what = format!("session {id} to be {want:?}");
    eventually(secs, &what, || {
        let mut c = c.clone();
        async move {
            let s = get(&mut c, p, id).await;
            (s.state == want as i32).then_some(s)
        }
    })
    .await
}

/// Creates a session over gRPC and links it by scanning its QR at wasim's simulated phone.
pub async fn link(
    c: &mut Client,
    p: &TestProject,
    admin: &wasim::client::Admin,
    name: &str,
    phone: &str,
) -> Session {
    let req = grpc_signed(
        p,
        &format!("{SVC}CreateSession"),
        CreateSessionRequest {
            name: name.into(),
            ..Default::default()
        },
    );
    let s = c
        .create_session(req)
        .await
        .expect("create")
        .into_inner()
        .session
        .expect("session");
    let qr = eventually(15, "a QR code", || {
        let mut c = c.clone();
        let id = s.session_id.clone();
        async move {
            let req = grpc_signed(
                p,
                &format!("{SVC}GetQrCode"),
                GetQrCodeRequest {
                    session_id: id,
                    ..Default::default()
                },
            );
            let q = c.get_qr_code(req).await.expect("qr").into_inner();
            (!q.qr_code.is_empty()).then_some(q)
        }
    })
    .await;
    assert!(qr.png.starts_with(b"\x89PNG"), "PNG rendering");
    assert!(qr.svg.contains("<svg"), "SVG rendering");
    admin.scan(&qr.qr_code, phone).await.expect("scan");
    let s = wait_state(c, p, &s.session_id, SessionState::Connected, 20).await;
    assert_eq!(s.phone_number, phone);
    s
}
