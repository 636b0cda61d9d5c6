//! REST is the transcoding of gRPC: every REST operation names the gRPC method it calls, every
//! gRPC method with an HTTP binding is served at that route, and the same operation answers
//! the same over both (accounts and SAK session keys over gRPC included).

use std::collections::BTreeSet;

use prost_reflect::{DescriptorPool, Value as PbValue};
use tonic::metadata::MetadataValue;
use wagate::proto::v1::accounts_service_client::AccountsServiceClient;
use wagate::proto::v1::messaging_service_client::MessagingServiceClient;
use wagate::proto::v1::sessions_service_client::SessionsServiceClient;
use wagate::proto::v1::{
    CreateApiKeyRequest, CreateSessionRequest, ListHistoryRequest, LoginRequest, MessageStatus,
    MessageType, RegisterRequest, SendMessageRequest,
};

use crate::support::{TestApp, TestDb, read};

const VERBS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `/api/v1/sessions/{session_id}/qr` and `/api/v1/sessions/{id}/qr` are one route.
fn route(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            c => out.push(c),
        }
    }
    out
}

/// Every `google.api.http` binding of the services: (verb, route, "pkg.Service/Method").
fn http_bindings() -> (BTreeSet<(String, String, String)>, BTreeSet<String>) {
    let pool = DescriptorPool::decode(wagate::proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("the google.api.http extension is in the descriptor set");
    let mut bindings = BTreeSet::new();
    let mut methods = BTreeSet::new();
    for service in pool.services().filter(|s| s.package_name() == "wagate.v1") {
        for method in service.methods() {
            let name = format!("{}/{}", service.full_name(), method.name());
            methods.insert(name.clone());
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let rule = options.get_extension(&http);
            let PbValue::Message(rule) = rule.as_ref() else {
                panic!("{name}: google.api.http is not a message");
            };
            let mut rules = vec![rule.clone()];
            if let Some(PbValue::List(extra)) = rule
                .get_field_by_name("additional_bindings")
                .as_deref()
                .cloned()
                .as_ref()
            {
                for r in extra {
                    if let PbValue::Message(m) = r {
                        rules.push(m.clone());
                    }
                }
            }
            for r in rules {
                for verb in VERBS {
                    if let Some(PbValue::String(path)) = r.get_field_by_name(verb).as_deref()
                        && !path.is_empty()
                    {
                        bindings.insert((verb.to_owned(), route(path), name.clone()));
                    }
                }
            }
        }
    }
    (bindings, methods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_route_is_a_grpc_method_and_every_binding_is_routed() {
    let t = TestApp::init(TestDb::sqlite()).start().await;
    let (code, doc) = read(
        t.http
            .get(t.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    let (bindings, methods) = http_bindings();

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for verb in VERBS {
            let Some(op) = item.get(verb) else { continue };
            let method = op["x-grpc-method"]
                .as_str()
                .unwrap_or_else(|| panic!("{verb} {path} names no gRPC method"));
            assert!(
                methods.contains(method),
                "{verb} {path} names {method}, which no service has"
            );
            documented.insert((verb.to_owned(), route(path), method.to_owned()));
        }
    }
    let unrouted: Vec<_> = bindings.difference(&documented).collect();
    assert!(
        unrouted.is_empty(),
        "gRPC bindings without their REST operation: {unrouted:?}"
    );
    let unbound: Vec<_> = documented.difference(&bindings).collect();
    assert!(
        unbound.is_empty(),
        "REST operations whose method's google.api.http does not say so: {unbound:?}"
    );

    // Documented is routed: each binding answers from a handler (a credential or input
    // error), never the router's 404 or 405.
    for (verb, path, method) in &bindings {
        let url = t.url(&path.replace("{}", "x"));
        let req = match verb.as_str() {
            "get" => t.http.get(url),
            "post" => t.http.post(url),
            "put" => t.http.put(url),
            "patch" => t.http.patch(url),
            "delete" => t.http.delete(url),
            other => panic!("{other} is not used"),
        };
        let (status, body) = read(req.send().await.unwrap()).await;
        assert!(
            status != 405 && body["code"] != "NOT_FOUND",
            "{verb} {path} ({method}) is not routed: {status} {body}"
        );
    }
}

fn bearer<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    req
}

fn keyed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-api-key", MetadataValue::try_from(key).unwrap());
    req
}

/// The account operations and the SAK session key work over gRPC, and what they do shows
/// over REST: one implementation per operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_session_keys_work_over_grpc() {
    let t = TestApp::init(TestDb::sqlite())
        .node("node-tc")
        .configure(|s| s.default_country_code = "62".into())
        .start()
        .await;
    let mut accounts = AccountsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let reg = accounts
        .register(RegisterRequest {
            email: "grpc@example.com".into(),
            password: "correct horse".into(),
            name: String::new(),
        })
        .await
        .expect("register needs no credential")
        .into_inner();
    assert_eq!(reg.user.as_ref().unwrap().email, "grpc@example.com");
    let login = accounts
        .login(LoginRequest {
            email: "grpc@example.com".into(),
            password: "wrong horse".into(),
        })
        .await
        .expect_err("a wrong password");
    assert_eq!(login.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        login.metadata().get("x-error-code").unwrap(),
        "INVALID_CREDENTIALS"
    );

    // The JWT from gRPC works over REST, and a user key made over gRPC too.
    let key = accounts
        .create_api_key(bearer(
            &reg.token,
            CreateApiKeyRequest { name: "ci".into() },
        ))
        .await
        .expect("create a user key with the JWT")
        .into_inner();
    assert!(key.key.starts_with("sak_"));
    let (code, keys) = read(
        t.http
            .get(t.url("/api/v1/auth/api-keys"))
            .bearer_auth(&reg.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(keys["data"][0]["prefix"], key.api_key.unwrap().prefix);
    let refused = accounts
        .create_api_key(keyed(&key.key, CreateApiKeyRequest::default()))
        .await
        .expect_err("a user key is not the account");
    assert_eq!(refused.metadata().get("x-error-code").unwrap(), "NO_TOKEN");

    // A session made with the user key over gRPC carries its own key, which sends over gRPC
    // with the SAK number rules and reads its history.
    let mut sessions = SessionsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let created = sessions
        .create_session(keyed(&key.key, CreateSessionRequest::default()))
        .await
        .expect("create a session with the user key")
        .into_inner();
    assert!(created.api_key.starts_with("sess_"), "{}", created.api_key);
    let session = created.session.unwrap();
    let mut messaging = MessagingServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let sent = messaging
        .send_message(keyed(
            &created.api_key,
            SendMessageRequest {
                recipient: "(812) 345-6789".into(),
                r#type: MessageType::Text as i32,
                message: "over grpc with a session key".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("send with the session key")
        .into_inner();
    assert_eq!(sent.status, MessageStatus::Queued as i32);
    assert_eq!(sent.session_id, session.session_id);
    assert_eq!(sent.recipient, "628123456789");
    let history = messaging
        .list_history(keyed(&created.api_key, ListHistoryRequest::default()))
        .await
        .expect("history with the session key")
        .into_inner();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].id, sent.id);
    // The same history over REST.
    let (code, rest) = read(
        t.http
            .get(t.url("/api/v1/messages/history"))
            .header("x-api-key", &created.api_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(rest["data"]["messages"][0]["id"], sent.id.as_str());
    assert_eq!(rest["data"]["messages"][0]["to"], "628123456789");

    // A session key acts only for its session: managing is refused over gRPC as over REST.
    let denied = sessions
        .create_session(keyed(&created.api_key, CreateSessionRequest::default()))
        .await
        .expect_err("a session key does not manage");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(denied.metadata().get("x-error-code").unwrap(), "FORBIDDEN");
}
