//! The same operations over gRPC (tonic client) and grpc-web (raw HTTP/1.1), with signed metadata.

use prost::Message;
use tonic::metadata::MetadataValue;
use wagate::proto::v1::messaging_service_client::MessagingServiceClient;
use wagate::proto::v1::{
    GetMessageStatusRequest, MessageStatus, MessageType, SendMessageRequest, SendMessageResponse,
};

use crate::on_both_backends;
use crate::support::{TestApp, TestDb, TestProject, WebFrames, grpc_web_call};

on_both_backends!(
    grpc_send_and_status,
    grpc_errors_carry_stable_codes,
    grpc_web_send,
    grpc_web_watch_session
);

const SEND: &str = "/wagate.v1.MessagingService/SendMessage";
const STATUS: &str = "/wagate.v1.MessagingService/GetMessageStatus";

fn signed<T: Message>(p: &TestProject, path: &str, msg: T) -> tonic::Request<T> {
    crate::support::grpc_signed(p, path, msg)
}

async fn connect(t: &TestApp) -> MessagingServiceClient<tonic::transport::Channel> {
    MessagingServiceClient::connect(t.base.clone())
        .await
        .expect("gRPC connect")
}

fn text(msg: &str) -> SendMessageRequest {
    let mut payload = prost_types::Struct::default();
    payload.fields.insert(
        "ref".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("g-1".into())),
        },
    );
    SendMessageRequest {
        recipient: "6281234567890".into(),
        r#type: MessageType::Text as i32,
        message: msg.into(),
        payload: Some(payload),
        ..Default::default()
    }
}

async fn grpc_send_and_status(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let mut c = connect(&t).await;
    let r = c
        .send_message(signed(p, SEND, text("over grpc")))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(r.status, MessageStatus::Queued as i32);
    assert_eq!(r.device, p.device_code);
    assert_eq!(r.server_id, "node-test");

    let st = c
        .get_message_status(signed(
            p,
            STATUS,
            GetMessageStatusRequest { id: r.id.clone() },
        ))
        .await
        .expect("status")
        .into_inner()
        .message
        .expect("message");
    assert_eq!(st.id, r.id);
    assert_eq!(st.recipient, "6281234567890");
    assert_eq!(st.r#type, MessageType::Text as i32);
    assert!(st.created_at.is_some());
    // One service layer: the REST view of the gRPC-sent message agrees.
    let (code, rest) = t.status(p, &r.id).await;
    assert_eq!(code, 200);
    assert_eq!(rest["data"]["payload"]["ref"], "g-1");

    // Idempotency through x-request-id metadata.
    let mut a = signed(p, SEND, text("same"));
    a.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("grpc-key-1"));
    let mut b = signed(p, SEND, text("same"));
    b.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("grpc-key-1"));
    let id_a = c.send_message(a).await.unwrap().into_inner().id;
    let id_b = c.send_message(b).await.unwrap().into_inner().id;
    assert_eq!(id_a, id_b);

    // gRPC health reports the service.
    let channel = tonic::transport::Channel::from_shared(t.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "wagate.v1.MessagingService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Reflection lists our services in both versions (v1alpha is what grpcio-reflection,
    // Postman and Evans ask).
    macro_rules! list_services {
        ($pb:path) => {{
            use $pb as r;
            let mut client =
                r::server_reflection_client::ServerReflectionClient::new(channel.clone());
            let req = r::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(r::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                )),
            };
            let mut answers = client
                .server_reflection_info(futures::stream::iter([req]))
                .await
                .unwrap()
                .into_inner();
            match answers.message().await.unwrap().unwrap().message_response {
                Some(r::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                    l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
                }
                other => panic!("{other:?}"),
            }
        }};
    }
    for names in [
        list_services!(tonic_reflection::pb::v1),
        list_services!(tonic_reflection::pb::v1alpha),
    ] {
        assert!(
            names.iter().any(|n| n == "wagate.v1.MessagingService"),
            "{names:?}"
        );
    }
}

fn error_code(s: &tonic::Status) -> &str {
    s.metadata()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn grpc_errors_carry_stable_codes(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let mut c = connect(&t).await;
    // Signature over other bytes than sent.
    let mut req = signed(p, SEND, text("signed"));
    req.get_mut().message = "tampered".into();
    let e = c.send_message(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(error_code(&e), "INVALID_SIGNATURE");
    // Signed for another method: no cross-method replay.
    let e = c
        .send_message(signed(p, STATUS, text("x")))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "INVALID_SIGNATURE");
    // No credentials.
    let e = c
        .send_message(tonic::Request::new(text("x")))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), error_code(&e)),
        (tonic::Code::Unauthenticated, "MISSING_API_KEY")
    );
    // Validation.
    let mut bad = text("x");
    bad.recipient = "12".into();
    let e = c.send_message(signed(p, SEND, bad)).await.unwrap_err();
    assert_eq!(
        (e.code(), error_code(&e)),
        (tonic::Code::InvalidArgument, "INVALID_RECIPIENT")
    );
    let e = c
        .get_message_status(signed(
            p,
            STATUS,
            GetMessageStatusRequest {
                id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), error_code(&e)),
        (tonic::Code::NotFound, "MESSAGE_NOT_FOUND")
    );
    assert!(t.message_ids(p).await.is_empty());
}

/// A browser's grpc-web call: HTTP/1.1, `application/grpc-web+proto`, trailers in the body.
async fn grpc_web_send(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project();
    let msg = text("from a browser").encode_to_vec();
    let resp = grpc_web_call(&t, p, SEND, &msg).await;
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let body = resp.bytes().await.unwrap();
    // Data frame, then the trailers frame (flag 0x80).
    assert_eq!(body[0], 0);
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let out = SendMessageResponse::decode(&body[5..5 + len]).unwrap();
    assert_eq!(out.status, MessageStatus::Queued as i32);
    let trailers = &body[5 + len..];
    assert_eq!(trailers[0], 0x80);
    assert!(String::from_utf8_lossy(&trailers[5..]).contains("grpc-status:0"));
    let (_, st) = t.status(p, &out.id).await;
    assert_eq!(st["data"]["status"], "queued");

    // The CORS preflight a browser sends first.
    let pre = t
        .http
        .request(reqwest::Method::OPTIONS, t.url(SEND))
        .header("origin", "http://console.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-api-key,x-timestamp,x-signature",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("x-signature") && allowed.contains("x-grpc-web"),
        "{allowed}"
    );
}

/// A browser following a session over grpc-web: the server stream's messages arrive as
/// data frames on one HTTP/1.1 response, the current state first, then every change.
async fn grpc_web_watch_session(db: TestDb) {
    use wagate::proto::v1::sessions_service_client::SessionsServiceClient;
    use wagate::proto::v1::{
        CreateSessionRequest, SessionState, WatchSessionRequest, WatchSessionResponse,
    };
    const SVC: &str = "/wagate.v1.SessionsService/";
    let t = TestApp::init(db)
        .with_wasim()
        .with_project()
        .node("node-1")
        .start()
        .await;
    let p = t.project();
    let mut c = SessionsServiceClient::connect(t.base.clone())
        .await
        .expect("gRPC connect");
    let create = format!("{SVC}CreateSession");
    let s = c
        .create_session(signed(
            p,
            &create,
            CreateSessionRequest {
                name: "web".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create")
        .into_inner()
        .session
        .expect("session");

    let path = format!("{SVC}WatchSession");
    let msg = WatchSessionRequest {
        session_id: s.session_id.clone(),
    }
    .encode_to_vec();
    let mut frames = WebFrames::new(grpc_web_call(&t, p, &path, &msg).await);
    // The current state first, for this session.
    let first = frames.message::<WatchSessionResponse>().await;
    let session = first.session.expect("session");
    assert_eq!(session.session_id, s.session_id);
    assert!(
        [SessionState::Pending as i32, SessionState::Qr as i32].contains(&session.state),
        "{session:?}"
    );
    // Then the QR code, which the phone scans, and the state changes up to connected.
    let mut qr = first.qr_code;
    while qr.is_empty() {
        qr = frames.message::<WatchSessionResponse>().await.qr_code;
    }
    t.wa().scan(&qr, "15550105001").await.expect("scan");
    loop {
        let m = frames.message::<WatchSessionResponse>().await;
        let state = m.session.expect("session").state;
        if state == SessionState::Connected as i32 {
            break;
        }
    }
    drop(frames);
    t.shutdown().await;
}
