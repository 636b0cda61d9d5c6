//! The OpenAPI document tells the truth: every documented operation is routed and answers
//! the error envelope, and real answers of the SAK and webhook endpoints have exactly the
//! shape the document gives them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::sak_api::Sak;
use crate::support::{TestApp, TestDb, assert_error, read};

/// Checks `v` against an OpenAPI schema: required properties present, no undocumented
/// property, types as stated, recursively. `at` names the place for the failure message.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{at}: dangling $ref {r}");
        return conforms(doc, target, v, at);
    }
    if let Some(variants) = schema["oneOf"].as_array() {
        if v.is_null() && variants.iter().any(|s| s["type"] == "null") {
            return;
        }
        let non_null: Vec<&Value> = variants.iter().filter(|s| s["type"] != "null").collect();
        assert_eq!(non_null.len(), 1, "{at}: only nullable oneOf is used");
        return conforms(doc, non_null[0], v, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert!(
        types.is_empty()
            || types.contains(&kind)
            || (kind == "integer" && types.contains(&"number")),
        "{at}: {v} is {kind}, the document says {types:?}"
    );
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            for req in schema["required"].as_array().into_iter().flatten() {
                let key = req.as_str().unwrap();
                assert!(map.contains_key(key), "{at}: `{key}` is required, got {v}");
            }
            for (key, val) in map {
                let Some(prop) = props.and_then(|p| p.get(key)) else {
                    panic!("{at}: `{key}` is not in the document ({v})");
                };
                conforms(doc, prop, val, &format!("{at}.{key}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// Asserts that a real answer is one the document lists for this operation, in its shape.
fn documented(doc: &Value, method: &str, path: &str, got: &(u16, Value)) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let resp = &op["responses"][got.0.to_string()];
    assert!(
        resp.is_object(),
        "{method} {path}: status {} is not documented ({})",
        got.0,
        got.1
    );
    let schema = &resp["content"]["application/json"]["schema"];
    conforms(doc, schema, &got.1, &format!("{method} {path} {}", got.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_the_rest_surface() {
    // With an operator token, so the cluster endpoints are on (and answer 401 without it).
    let t = TestApp::init(TestDb::sqlite())
        .with_wasim()
        .node("node-oa")
        .configure(|s| s.admin_token = Some("operator-token".into()))
        .start()
        .await;
    let s = Sak { t: &t };
    let (code, doc) = read(
        t.http
            .get(t.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for scheme in ["bearer", "apiKey"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object());
    }

    // The SAK document's endpoints and the webhook management around them are all there.
    for (method, path) in [
        ("post", "/api/v1/auth/register"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/api-keys"),
        ("get", "/api/v1/auth/api-keys"),
        ("post", "/api/v1/sessions"),
        ("get", "/api/v1/sessions"),
        ("get", "/api/v1/sessions/{id}/status"),
        ("get", "/api/v1/sessions/{id}/qr"),
        ("delete", "/api/v1/sessions/{id}"),
        ("post", "/api/v1/messages/send"),
        ("post", "/api/v1/messages/send-image"),
        ("post", "/api/v1/messages/send-document"),
        ("post", "/api/v1/messages/send-video"),
        ("get", "/api/v1/messages/history"),
        ("post", "/api/v1/webhooks"),
        ("post", "/api/v1/webhooks/test"),
        ("post", "/api/v1/send"),
        ("get", "/api/v1/status/{id}"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let send = &doc["paths"]["/api/v1/send"]["post"];
    assert!(
        send["requestBody"]["content"]["multipart/form-data"].is_object(),
        "RK send takes a multipart form too: {send}"
    );
    let image = &doc["paths"]["/api/v1/messages/send-image"]["post"]["requestBody"]["content"]["multipart/form-data"]
        ["schema"]["$ref"];
    let form = image.as_str().unwrap().rsplit('/').next().unwrap();
    assert!(
        doc["components"]["schemas"][form]["properties"]["image"].is_object(),
        "the file field is named like the SAK document says"
    );

    // Every documented operation is routed: without credentials it answers the error
    // envelope (never the router's 404/405).
    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = path.replace("{id}", "x").replace("{deliveryId}", "y");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let got = read(s.req(m, &url).send().await.unwrap()).await;
            assert!(
                matches!(got.0, 400 | 401),
                "{method} {path}: {} {}",
                got.0,
                got.1
            );
            if path.starts_with("/qontak/") {
                // The Qontak surface answers its own envelope.
                assert_eq!(got.1["status"], "error", "{method} {path}");
                assert!(
                    got.1["error"]["name"].is_string(),
                    "{method} {path}: {}",
                    got.1
                );
            } else {
                assert_eq!(got.1["success"], false, "{method} {path}");
                assert!(got.1["code"].is_string(), "{method} {path}: {}", got.1);
            }
            documented(&doc, method, path, &got);
            operations += 1;
        }
    }
    assert!(operations >= 34, "{operations} operations documented");

    // Real answers have the documented shapes.
    let none = ("", "");
    let reg = s
        .post(
            "/api/v1/auth/register",
            none,
            json!({"email": "doc@example.com", "password": "correct horse", "name": "Doc"}),
        )
        .await;
    documented(&doc, "post", "/api/v1/auth/register", &reg);
    let login = s
        .post(
            "/api/v1/auth/login",
            none,
            json!({"email": "doc@example.com", "password": "correct horse"}),
        )
        .await;
    documented(&doc, "post", "/api/v1/auth/login", &login);
    let bearer = format!("Bearer {}", login.1["data"]["token"].as_str().unwrap());
    let jwt = ("authorization", bearer.as_str());

    let key = s
        .post("/api/v1/auth/api-keys", jwt, json!({"name": "ci"}))
        .await;
    documented(&doc, "post", "/api/v1/auth/api-keys", &key);
    let keys = s.get("/api/v1/auth/api-keys", jwt).await;
    documented(&doc, "get", "/api/v1/auth/api-keys", &keys);
    let creds = s.get("/api/v1/auth/credentials", jwt).await;
    documented(&doc, "get", "/api/v1/auth/credentials", &creds);

    let created = s
        .post(
            "/api/v1/sessions",
            jwt,
            json!({"name": "Docs", "webhook": {"url": "https://hooks.example.com/wa", "events": ["*"]}}),
        )
        .await;
    documented(&doc, "post", "/api/v1/sessions", &created);
    let id = created.1["data"]["sessionId"].as_str().unwrap().to_owned();
    let session_key = created.1["data"]["apiKey"].as_str().unwrap().to_owned();
    let session = ("x-api-key", session_key.as_str());
    let list = s.get("/api/v1/sessions", jwt).await;
    documented(&doc, "get", "/api/v1/sessions", &list);
    let status = s.get(&format!("/api/v1/sessions/{id}/status"), jwt).await;
    documented(&doc, "get", "/api/v1/sessions/{id}/status", &status);
    // The check is not vacuous: an undocumented field, a missing one, or a wrong type fails.
    for broken in [
        |d: &mut Value| d["data"]["extra"] = json!(1),
        |d: &mut Value| drop(d["data"].as_object_mut().unwrap().remove("connected")),
        |d: &mut Value| d["data"]["connected"] = json!("yes"),
    ] {
        let mut body = status.1.clone();
        broken(&mut body);
        let check = std::panic::catch_unwind(|| {
            documented(&doc, "get", "/api/v1/sessions/{id}/status", &(200, body))
        });
        assert!(check.is_err(), "a wrong answer passed the check");
    }
    let qr = s.get(&format!("/api/v1/sessions/{id}/qr"), jwt).await;
    documented(&doc, "get", "/api/v1/sessions/{id}/qr", &qr);

    let sent = s
        .post(
            "/api/v1/messages/send",
            session,
            json!({"to": "919876543210", "text": "hello"}),
        )
        .await;
    documented(&doc, "post", "/api/v1/messages/send", &sent);
    let history = s.get("/api/v1/messages/history?limit=10", session).await;
    documented(&doc, "get", "/api/v1/messages/history", &history);
    assert_eq!(history.1["data"]["messages"].as_array().unwrap().len(), 1);

    let hook = s
        .post(
            "/api/v1/webhooks",
            jwt,
            json!({"url": "https://hooks.example.com/all", "events": ["message.status"]}),
        )
        .await;
    documented(&doc, "post", "/api/v1/webhooks", &hook);
    let hid = hook.1["data"]["webhookId"].as_str().unwrap().to_owned();
    let hooks = s.get("/api/v1/webhooks", jwt).await;
    documented(&doc, "get", "/api/v1/webhooks", &hooks);
    let one = s.get(&format!("/api/v1/webhooks/{hid}"), jwt).await;
    documented(&doc, "get", "/api/v1/webhooks/{id}", &one);
    let patched = read(
        s.req(Method::PATCH, &format!("/api/v1/webhooks/{hid}"))
            .header(jwt.0, jwt.1)
            .header("content-type", "application/json")
            .body(json!({"events": ["*"]}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    documented(&doc, "patch", "/api/v1/webhooks/{id}", &patched);
    let rotated = s
        .post(
            &format!("/api/v1/webhooks/{hid}/rotate-secret"),
            jwt,
            json!({"overlapSeconds": 60}),
        )
        .await;
    documented(
        &doc,
        "post",
        "/api/v1/webhooks/{id}/rotate-secret",
        &rotated,
    );
    let test = s.post("/api/v1/webhooks/test", session, json!({})).await;
    documented(&doc, "post", "/api/v1/webhooks/test", &test);
    let deliveries = s
        .get(&format!("/api/v1/webhooks/{hid}/deliveries"), jwt)
        .await;
    documented(&doc, "get", "/api/v1/webhooks/{id}/deliveries", &deliveries);
    let delivery = deliveries.1["data"]["deliveries"][0]["deliveryId"]
        .as_str()
        .expect("the test event's delivery")
        .to_owned();
    let again = s
        .post(
            &format!("/api/v1/webhooks/{hid}/deliveries/{delivery}/redeliver"),
            jwt,
            json!({}),
        )
        .await;
    documented(
        &doc,
        "post",
        "/api/v1/webhooks/{id}/deliveries/{deliveryId}/redeliver",
        &again,
    );
    let requeued = s
        .post(
            &format!("/api/v1/webhooks/{hid}/redeliver-failed"),
            jwt,
            json!({"since": "2026-01-01T00:00:00Z"}),
        )
        .await;
    documented(
        &doc,
        "post",
        "/api/v1/webhooks/{id}/redeliver-failed",
        &requeued,
    );
    let bad = s
        .post(
            &format!("/api/v1/webhooks/{hid}/redeliver-failed"),
            jwt,
            json!({"since": "yesterday"}),
        )
        .await;
    documented(&doc, "post", "/api/v1/webhooks/{id}/redeliver-failed", &bad);

    // Malformed input anywhere in the request gets the envelope with a stable code.
    let bad_query = s
        .get(
            &format!("/api/v1/webhooks/{hid}/deliveries?pageSize=abc"),
            jwt,
        )
        .await;
    assert_error(&bad_query, 400, "VALIDATION_ERROR");
    documented(&doc, "get", "/api/v1/webhooks/{id}/deliveries", &bad_query);
    let bad_history = s.get("/api/v1/messages/history?limit=ten", session).await;
    assert_error(&bad_history, 400, "VALIDATION_ERROR");
    assert_error(
        &s.get("/api/v1/sessions/%FF/status", jwt).await,
        400,
        "VALIDATION_ERROR",
    );
    assert_error(
        &s.get("/api/v1/status/%FF", none).await,
        400,
        "VALIDATION_ERROR",
    );
    let array = s.post("/api/v1/sessions", jwt, json!([null, null])).await;
    assert_error(&array, 400, "INVALID_JSON");
    documented(&doc, "post", "/api/v1/sessions", &array);
    for overlap in [json!(9_223_372_036_854_775_808u64), json!(31 * 24 * 3600)] {
        let too_long = s
            .post(
                &format!("/api/v1/webhooks/{hid}/rotate-secret"),
                jwt,
                json!({ "overlapSeconds": overlap }),
            )
            .await;
        assert_error(&too_long, 400, "VALIDATION_ERROR");
    }

    let gone = read(
        s.req(Method::DELETE, &format!("/api/v1/webhooks/{hid}"))
            .header(jwt.0, jwt.1)
            .send()
            .await
            .unwrap(),
    )
    .await;
    documented(&doc, "delete", "/api/v1/webhooks/{id}", &gone);
    let missing = s.get(&format!("/api/v1/webhooks/{hid}"), jwt).await;
    documented(&doc, "get", "/api/v1/webhooks/{id}", &missing);

    let deleted = read(
        s.req(Method::DELETE, &format!("/api/v1/sessions/{id}"))
            .header(jwt.0, jwt.1)
            .send()
            .await
            .unwrap(),
    )
    .await;
    documented(&doc, "delete", "/api/v1/sessions/{id}", &deleted);
    let rotated = s
        .post("/api/v1/auth/credentials/rotate", jwt, json!({}))
        .await;
    documented(&doc, "post", "/api/v1/auth/credentials/rotate", &rotated);
    t.shutdown().await;
}
