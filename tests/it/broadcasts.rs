//! Broadcasts end to end: templates over gRPC (signed) and their REST transcoding (SAK
//! credentials), the render preview, and the Qontak-compatible surface called the way
//! Mekari's SDK calls it.

use serde_json::{Value, json};
use wagate::proto::v1::broadcasts_service_client::BroadcastsServiceClient;
use wagate::proto::v1::{
    AddSuppressionRequest, CreateTemplateRequest, GetTemplateRequest, ListSuppressionsRequest,
    ListTemplatesRequest, RemoveSuppressionRequest, RenderTemplateRequest, Session, TemplateButton,
    TemplateHeader, TemplateParameters, TemplateVariant,
};

use crate::on_both_backends;
use crate::sak_api::Sak;
use crate::support::qontak::{Qontak, assert_qontak_error};
use crate::support::{TestApp, TestDb, assert_error, eventually, grpc_signed, read};

on_both_backends!(
    templates_over_grpc_and_rest_render_the_same_text,
    qontak_surface_signed_like_the_mekari_sdk,
    contact_list_import_reports_every_row,
    qontak_contact_list_of_100k_rows_is_streamed,
    stop_keyword_suppresses_the_sender,
    broadcasts_reach_recipients_with_the_rendered_text,
    a_ban_pauses_the_campaign_until_the_session_recovers,
    a_banned_session_hands_its_recipients_to_the_other,
    a_restart_mid_campaign_loses_and_repeats_nothing,
    a_scheduled_campaign_starts_on_time,
    a_session_down_for_long_gives_its_queue_to_the_other,
);

const CREATE: &str = "/wagate.v1.BroadcastsService/CreateTemplate";
const LIST: &str = "/wagate.v1.BroadcastsService/ListTemplates";
const GET: &str = "/wagate.v1.BroadcastsService/GetTemplate";
const RENDER: &str = "/wagate.v1.BroadcastsService/RenderTemplate";

fn invoice_variant(language: &str) -> TemplateVariant {
    TemplateVariant {
        language: language.into(),
        header: Some(TemplateHeader {
            format: "TEXT".into(),
            text: "Invoice {{1}}".into(),
            media_url: String::new(),
        }),
        body: "Hi {{1}}, your invoice of {{2}} is ready.".into(),
        footer: "Reply STOP to opt out".into(),
        buttons: vec![
            TemplateButton {
                r#type: "URL".into(),
                text: "Pay".into(),
                url: "https://pay.example/i/{{1}}".into(),
                phone_number: String::new(),
            },
            TemplateButton {
                r#type: "QUICK_REPLY".into(),
                text: "Done".into(),
                ..Default::default()
            },
        ],
    }
}

const INVOICE_TEXT: &str = "*Invoice INV-9*\n\nHi Ana, your invoice of Rp 10.000 is ready.\n\n\
                            Pay: https://pay.example/i/INV-9\n\n1. Done\n\n_Reply STOP to opt out_";

async fn templates_over_grpc_and_rest_render_the_same_text(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project().project_wide();
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();

    // gRPC, signed with the project's key.
    let created = grpc
        .create_template(grpc_signed(
            &p,
            CREATE,
            CreateTemplateRequest {
                name: "invoice".into(),
                category: "utility".into(),
                variants: vec![invoice_variant("en_US"), invoice_variant("id")],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(created.status, "APPROVED");
    assert_eq!(created.category, "UTILITY");
    let id = created.template_id.clone();
    let got = grpc
        .get_template(grpc_signed(
            &p,
            GET,
            GetTemplateRequest {
                template_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(got.variants, created.variants);
    let params = TemplateParameters {
        body: vec!["Ana".into(), "Rp 10.000".into()],
        header: vec!["INV-9".into()],
        buttons: [(0, "INV-9".to_string())].into(),
        ..Default::default()
    };
    let rendered = grpc
        .render_template(grpc_signed(
            &p,
            RENDER,
            RenderTemplateRequest {
                template_id: id.clone(),
                language: "id_ID".into(),
                parameters: Some(params.clone()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rendered.language, "id");
    assert_eq!(rendered.text, INVOICE_TEXT);
    assert_eq!(rendered.media_format, "");
    let wrong = grpc
        .render_template(grpc_signed(
            &p,
            RENDER,
            RenderTemplateRequest {
                template_id: id.clone(),
                language: "id".into(),
                parameters: Some(TemplateParameters {
                    body: vec!["Ana".into()],
                    ..params.clone()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        wrong.metadata().get("x-error-code").unwrap(),
        "TEMPLATE_VARIABLES_MISMATCH"
    );
    let dup = grpc
        .create_template(grpc_signed(
            &p,
            CREATE,
            CreateTemplateRequest {
                name: "invoice".into(),
                category: "UTILITY".into(),
                variants: vec![invoice_variant("id")],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let gap = grpc
        .create_template(grpc_signed(
            &p,
            CREATE,
            CreateTemplateRequest {
                name: "gap".into(),
                category: "UTILITY".into(),
                variants: vec![TemplateVariant {
                    language: "id".into(),
                    body: "Hi {{2}}".into(),
                    ..Default::default()
                }],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        gap.metadata().get("x-error-code").unwrap(),
        "INVALID_TEMPLATE"
    );
    let list = grpc
        .list_templates(grpc_signed(&p, LIST, ListTemplatesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((list.templates.len(), list.total), (1, 1));

    // REST under /api/v1 with an account's JWT: its own project, the same rules.
    let s = Sak { t: &t };
    let bearer = s.register("bc@example.com").await;
    let jwt = ("authorization", bearer.as_str());
    let body = json!({
        "name": "invoice",
        "category": "UTILITY",
        "variants": [{
            "language": "id",
            "header": {"format": "TEXT", "text": "Invoice {{1}}"},
            "body": "Hi {{1}}, your invoice of {{2}} is ready.",
            "footer": "Reply STOP to opt out",
            "buttons": [
                {"type": "URL", "text": "Pay", "url": "https://pay.example/i/{{1}}"},
                {"type": "QUICK_REPLY", "text": "Done"}
            ]
        }]
    });
    let (code, made) = s.post("/api/v1/templates", jwt, body.clone()).await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["data"]["status"], "APPROVED");
    let rid = made["data"]["templateId"].as_str().unwrap().to_owned();
    assert_ne!(rid, id, "another project's template");
    // Another project's template is not found.
    assert_error(
        &s.get(&format!("/api/v1/templates/{id}"), jwt).await,
        404,
        "TEMPLATE_NOT_FOUND",
    );
    let render =
        json!({"body": ["Ana", "Rp 10.000"], "header": ["INV-9"], "buttons": {"0": "INV-9"}});
    let (code, r) = s
        .post(&format!("/api/v1/templates/{rid}/render"), jwt, render)
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["data"]["text"], INVOICE_TEXT);
    assert_eq!(r["data"]["mediaFormat"], Value::Null);
    let wrong = s
        .post(
            &format!("/api/v1/templates/{rid}/render"),
            jwt,
            json!({"body": ["x"], "header": ["y"]}),
        )
        .await;
    assert_error(&wrong, 422, "TEMPLATE_VARIABLES_MISMATCH");
    assert_eq!(
        wrong.1["message"],
        "Message Template has 2 variable, please adjust your payload."
    );

    // Update and delete.
    let mut changed = body.clone();
    changed["variants"][0]["body"] = json!("Hello {{1}}");
    changed["variants"][0]["header"] =
        json!({"format": "IMAGE", "mediaUrl": "https://cdn.example/a.jpg"});
    changed["variants"][0]["buttons"] = json!([]);
    let put = crate::support::read(
        s.req(reqwest::Method::PUT, &format!("/api/v1/templates/{rid}"))
            .header(jwt.0, jwt.1)
            .header("content-type", "application/json")
            .body(changed.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(put.0, 200, "{}", put.1);
    let (_, r) = s
        .post(
            &format!("/api/v1/templates/{rid}/render"),
            jwt,
            json!({"body": ["Ana"]}),
        )
        .await;
    assert_eq!(r["data"]["text"], "Hello Ana\n\n_Reply STOP to opt out_");
    assert_eq!(r["data"]["mediaFormat"], "IMAGE");
    assert_eq!(r["data"]["mediaUrl"], "https://cdn.example/a.jpg");
    let (code, listed) = s.get("/api/v1/templates?pageSize=10", jwt).await;
    assert_eq!(code, 200);
    assert_eq!(listed["data"]["total"], 1);
    let del = crate::support::read(
        s.req(reqwest::Method::DELETE, &format!("/api/v1/templates/{rid}"))
            .header(jwt.0, jwt.1)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(del.0, 200, "{}", del.1);
    assert_error(
        &s.get(&format!("/api/v1/templates/{rid}"), jwt).await,
        404,
        "TEMPLATE_NOT_FOUND",
    );
    t.shutdown().await;
}

async fn qontak_surface_signed_like_the_mekari_sdk(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project().clone();
    let q = Qontak::new(&t, &p);

    // Channels: the project's sessions.
    let (code, list) = q
        .get("/qontak/chat/v1/integrations?offset=1&limit=10")
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["status"], "success");
    let channels = list["data"].as_array().unwrap();
    assert_eq!(channels.len(), 1);
    let ch = &channels[0];
    assert_eq!(ch["id"], p.device_id.as_str());
    assert_eq!(ch["target_channel"], "wa");
    assert_eq!(ch["organization_id"], p.project_id.as_str());
    assert_eq!(ch["is_active"], false);
    assert_eq!(ch["settings"]["device_code"], p.device_code.as_str());
    let pagination = &list["meta"]["pagination"];
    assert_eq!(
        (pagination["offset"].as_i64(), pagination["total"].as_i64()),
        (Some(1), Some(1))
    );
    let (code, one) = q
        .get(&format!("/qontak/chat/v1/integrations/{}", p.device_id))
        .await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["data"]["id"], p.device_id.as_str());
    assert_qontak_error(
        &q.get("/qontak/chat/v1/integrations/nope").await,
        404,
        "SESSION_NOT_FOUND",
    );

    // A template from Meta-style components (an OTP one, as Qontak's AUTHENTICATION).
    let otp = json!({
        "name": "auth_web_1727242109",
        "category": "AUTHENTICATION",
        "attributes": [{"language": "en_US", "components": [
            {"type": "BODY", "add_security_recommendation": true},
            {"type": "FOOTER", "code_expiration_minutes": 10},
            {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy Code"}]}
        ]}]
    });
    let (code, made) = q.post("/qontak/chat/v1/templates/whatsapp", &otp).await;
    assert_eq!(code, 201, "{made}");
    let d = &made["data"];
    assert_eq!(d["status"], "APPROVED");
    assert_eq!(d["language"], "en_US");
    assert_eq!(
        d["body"],
        "*{{1}}* is your verification code. For your security, do not share this code."
    );
    assert_eq!(d["footer"], "This code expires in 10 minutes.");
    assert_eq!(d["buttons"][0]["type"], "URL");
    assert_eq!(
        d["buttons"][0]["url"],
        "https://www.whatsapp.com/otp/code/?otp_type=COPY_CODE&code=otp{{1}}"
    );
    for (field, value) in [
        ("quality_rating", Value::Null),
        ("quality_rating_text", json!("Neutral")),
        ("type", json!("campaign")),
        ("header", Value::Null),
        ("organization_id", json!(p.project_id)),
    ] {
        assert_eq!(d[field], value, "{field}: {d}");
    }
    let otp_id = d["id"].as_str().unwrap().to_owned();
    let promo = json!({
        "name": "hello world promo",
        "category": "MARKETING",
        "language": "id",
        "components": [
            {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["https://cdn.example/p.jpg"]}},
            {"type": "BODY", "text": "Halo {{1}}, promo {{2}}!"},
            {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Beli", "url": "https://shop.example/{{1}}"}]}
        ]
    });
    let (code, made) = q.post("/qontak/chat/v1/templates/whatsapp", &promo).await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["data"]["header"]["format"], "IMAGE");
    assert_qontak_error(
        &q.post("/qontak/chat/v1/templates/whatsapp", &promo).await,
        409,
        "TEMPLATE_NAME_TAKEN",
    );

    // A GET whose query the SDK signs decoded (a space, `=` in a cursor) and sends encoded.
    let (code, found) = q
        .get("/qontak/chat/v1/templates/whatsapp?query=world+promo&cursor=MTU5NTUwOTI3Ny4yNDY%3D&offset=1&limit=10")
        .await;
    assert_eq!(code, 200, "{found}");
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["name"], "hello world promo");
    let (code, all) = q
        .get("/qontak/chat/v1/templates/whatsapp?offset=2&limit=1")
        .await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    assert_eq!(all["meta"]["pagination"]["total"], 2);
    assert_eq!(all["meta"]["pagination"]["offset"], 2);
    let (code, one) = q
        .get(&format!("/qontak/chat/v1/templates/{otp_id}/whatsapp"))
        .await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["data"]["id"], otp_id.as_str());
    assert_qontak_error(
        &q.get("/qontak/chat/v1/templates/nope/whatsapp").await,
        404,
        "TEMPLATE_NOT_FOUND",
    );

    // Refusals in Qontak's envelope: a wrong secret, no signature at all.
    let wrong = Qontak {
        secret: "not-the-secret".into(),
        ..Qontak::new(&t, &p)
    };
    assert_qontak_error(
        &wrong.get("/qontak/chat/v1/integrations").await,
        401,
        "INVALID_SIGNATURE",
    );
    let bare = crate::support::read(
        t.http
            .get(t.url("/qontak/chat/v1/templates/whatsapp"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_qontak_error(&bare, 401, "INVALID_AUTHORIZATION_HEADER");
    // The signature binds the request line: signed for one path, sent to another.
    let date = wagate::client::http_date_now();
    let auth = q.authorization(&date, "GET", "/qontak/chat/v1/integrations");
    let moved = crate::support::read(
        t.http
            .get(t.url("/qontak/chat/v1/templates/whatsapp"))
            .header("Date", date)
            .header("Authorization", auth)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_qontak_error(&moved, 401, "INVALID_SIGNATURE");
    t.shutdown().await;
}

/// Polls a contact list (through `get`) until its import ended.
async fn finished<F, Fut>(what: &str, mut get: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    eventually(120, what, || {
        let f = get();
        async move {
            let (code, body) = f.await;
            assert_eq!(code, 200, "{body}");
            let data = body["data"].clone();
            (data["progress"] != "processing").then_some(data)
        }
    })
    .await
}

async fn contact_list_import_reports_every_row(db: TestDb) {
    let t = TestApp::init(db).start().await;
    let s = Sak { t: &t };
    let bearer = s.register("lists@example.com").await;
    let jwt = ("authorization", bearer.as_str());
    let csv = "full_name,phone_number,city\n\
               Ana,+62 812-3456-7890,Bandung\n\
               Budi,6281111111111,Jakarta\n\
               No Phone,,Medan\n\
               Local,081234567890,Solo\n\
               Letters,62abc,Bogor\n\
               Ana Again,6281234567890,Depok\n\
               \"Quoted, Name\",6282222222222,\"Yogya, DIY\"\n";
    let (ct, body) = wagate::client::Multipart::new()
        .file("file", "contacts.csv", "text/csv", csv.as_bytes())
        .text("name", "customers")
        .finish();
    let (code, made) = read(
        s.req(reqwest::Method::POST, "/api/v1/contact-lists")
            .header(jwt.0, jwt.1)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["data"]["progress"], "processing");
    assert_eq!(made["data"]["name"], "customers");
    let id = made["data"]["contactListId"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/contact-lists/{id}");
    let list = finished("the import", || s.get(&path, jwt)).await;
    assert_eq!(list["progress"], "success", "{list}");
    for (field, want) in [
        ("rowsTotal", 7),
        ("accepted", 3),
        ("rejected", 3),
        ("duplicates", 1),
    ] {
        assert_eq!(list[field], want, "{field}: {list}");
    }
    assert_eq!(list["variables"], json!(["city"]));
    let rejections = list["rejections"].as_array().unwrap();
    let rows: Vec<i64> = rejections
        .iter()
        .map(|r| r["row"].as_i64().unwrap())
        .collect();
    assert_eq!(rows, vec![4, 5, 6]);
    assert_eq!(rejections[0]["reason"], "phone_number is empty");
    assert!(
        rejections[1]["reason"]
            .as_str()
            .unwrap()
            .contains("country code")
    );
    assert_eq!(rejections[2]["phoneNumber"], "62abc");
    // The contacts, merged: the later Ana row's values won.
    let db = t.db.open();
    let lid = wagate::values::ContactListId::from(id.as_str());
    let contacts = db
        .run(move |c| wagate::storage::contact_lists::contacts(c, &lid, "", 100))
        .await
        .unwrap();
    let phones: Vec<&str> = contacts.iter().map(|c| c.phone.as_str()).collect();
    assert_eq!(
        phones,
        vec!["6281111111111", "6281234567890", "6282222222222"]
    );
    assert_eq!(contacts[1].full_name, "Ana Again");
    assert_eq!(contacts[1].variables, r#"{"city":"Depok"}"#);
    assert_eq!(contacts[2].variables, r#"{"city":"Yogya, DIY"}"#);

    // A file without a phone_number column fails with why; a form without a file is refused.
    let (ct, body) = wagate::client::Multipart::new()
        .text("name", "bad")
        .file("file", "x.csv", "text/csv", b"full_name,city\nA,B\n")
        .finish();
    let (_, bad) = read(
        s.req(reqwest::Method::POST, "/api/v1/contact-lists")
            .header(jwt.0, jwt.1)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let bad_id = bad["data"]["contactListId"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/contact-lists/{bad_id}");
    let failed = finished("the bad import", || s.get(&path, jwt)).await;
    assert_eq!(failed["progress"], "failed");
    assert_eq!(
        failed["errorMessage"],
        "the file has no phone_number column"
    );
    let (ct, body) = wagate::client::Multipart::new().text("name", "x").finish();
    let none = read(
        s.req(reqwest::Method::POST, "/api/v1/contact-lists")
            .header(jwt.0, jwt.1)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&none, 400, "VALIDATION_ERROR");
    let (code, all) = s.get("/api/v1/contact-lists", jwt).await;
    assert_eq!(code, 200);
    assert_eq!(
        all["data"]["total"], 2,
        "the refused form created nothing: {all}"
    );
    assert_error(
        &s.get("/api/v1/contact-lists/nope", jwt).await,
        404,
        "CONTACT_LIST_NOT_FOUND",
    );
    t.shutdown().await;
}

async fn qontak_contact_list_of_100k_rows_is_streamed(db: TestDb) {
    let t = TestApp::init(db).with_project().start().await;
    let p = t.project().clone();
    let q = Qontak::new(&t, &p);
    let mut csv = String::from("phone_number,full_name,customer_name,company\n");
    for i in 0..100_000u64 {
        csv.push_str(&format!(
            "62812{:08},Name {i},Customer {i},Co {}\n",
            i,
            i % 7
        ));
    }
    // Every thousandth row twice (merged), and one bad row.
    for i in (0..100_000u64).step_by(1000) {
        csv.push_str(&format!("62812{:08},Again {i},C,Co\n", i));
    }
    csv.push_str("not-a-number,Bad,C,Co\n");
    let (ct, body) = wagate::client::Multipart::new()
        .text("name", "big list")
        .text("source_type", "spreadsheet")
        .file("file", "big.csv", "text/csv", csv.as_bytes())
        .finish();
    let (code, made) = read(
        q.request(
            reqwest::Method::POST,
            "/qontak/chat/v1/contacts/contact_lists/async",
        )
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["status"], "success");
    let id = made["data"]["id"].as_str().unwrap().to_owned();
    let path = format!("/qontak/chat/v1/contacts/contact_lists/{id}");
    let list = finished("the 100k import", || q.get(&path)).await;
    assert_eq!(list["progress"], "success", "{list}");
    assert_eq!(list["contacts_count"], 100_101);
    assert_eq!(list["contacts_count_success"], 100_000);
    assert_eq!(list["contacts_count_failed"], 1);
    assert_eq!(list["contacts_count_duplicate"], 100);
    assert_eq!(
        list["contact_variables"],
        json!(["customer_name", "company"])
    );
    assert_eq!(list["organization_id"], p.project_id.as_str());
    let at = |f: &str| chrono::DateTime::parse_from_rfc3339(list[f].as_str().unwrap()).unwrap();
    eprintln!(
        "imported 100,101 rows in {} ms",
        (at("finished_at") - at("created_at")).num_milliseconds()
    );
    let errors = list["error_messages"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].as_str().unwrap().starts_with("row 100102: "),
        "{errors:?}"
    );
    let (code, all) = q
        .get("/qontak/chat/v1/contacts/contact_lists?offset=1&limit=10")
        .await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["data"][0]["id"], id.as_str());
    assert_eq!(all["meta"]["pagination"]["total"], 1);
    assert_qontak_error(
        &q.get("/qontak/chat/v1/contacts/contact_lists/nope").await,
        404,
        "CONTACT_LIST_NOT_FOUND",
    );

    // A campaign over it is expanded into 100,000 recipients at once (scheduled ahead, then
    // cancelled: nothing is sent).
    let template = json!({"name": "hi", "category": "MARKETING", "language": "id",
        "components": [{"type": "BODY", "text": "Hi {{1}} from {{2}}"}]});
    let (code, made) = q
        .post("/qontak/chat/v1/templates/whatsapp", &template)
        .await;
    assert_eq!(code, 201, "{made}");
    let bulk = json!({
        "message_template_id": made["data"]["id"], "contact_list_id": id,
        "channel_integration_id": p.device_id, "language": {"code": "id"},
        "send_at": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
        "parameters": {"body": [{"key": "1", "value": "full_name"}, {"key": "2", "value": "company"}]}
    });
    let started = std::time::Instant::now();
    let (code, b) = q.post("/qontak/chat/v1/broadcasts/whatsapp", &bulk).await;
    let took = started.elapsed();
    assert_eq!(code, 201, "{b}");
    assert_eq!(b["data"]["recipients_total"], 100_000);
    eprintln!("expanded 100,000 recipients in {took:?}");
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let cancelled = grpc
        .cancel_broadcast(grpc_signed(
            &p.project_wide(),
            "/wagate.v1.BroadcastsService/CancelBroadcast",
            wagate::proto::v1::CancelBroadcastRequest {
                broadcast_id: b["data"]["id"].as_str().unwrap().to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .broadcast
        .unwrap();
    assert_eq!(cancelled.counts.unwrap().cancelled, 100_000);
    t.shutdown().await;
}

async fn stop_keyword_suppresses_the_sender(db: TestDb) {
    let t = TestApp::init(db).with_sessions(2).start().await;
    let (p, a, b) = (
        t.project().clone(),
        t.session(0).clone(),
        t.session(1).clone(),
    );
    let list = "/wagate.v1.BroadcastsService/ListSuppressions";
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    // A writes "Stop." to B (a session of the same project): A's number is suppressed.
    for text in ["stop it please", "Stop."] {
        let (code, body) = t
            .send_json(
                &p.via(&a),
                json!({"recipient": b.phone_number, "message": text}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let pw = p.project_wide();
    let found = eventually(30, "A suppressed", || {
        let mut grpc = grpc.clone();
        let pw = pw.clone();
        async move {
            let r = grpc
                .list_suppressions(grpc_signed(&pw, list, ListSuppressionsRequest::default()))
                .await
                .unwrap()
                .into_inner();
            r.suppressions.into_iter().next()
        }
    })
    .await;
    assert_eq!(found.phone_number, a.phone_number);
    assert_eq!(
        (found.reason.as_str(), found.detail.as_str()),
        ("STOP_KEYWORD", "STOP")
    );

    // Added and removed by hand.
    let added = grpc
        .add_suppression(grpc_signed(
            &pw,
            "/wagate.v1.BroadcastsService/AddSuppression",
            AddSuppressionRequest {
                phone_number: "+62 899-0000-1111".into(),
                note: "asked by phone".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .suppression
        .unwrap();
    assert_eq!(
        (added.phone_number.as_str(), added.reason.as_str()),
        ("6289900001111", "MANUAL")
    );
    let all = grpc
        .list_suppressions(grpc_signed(&pw, list, ListSuppressionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total, 2);
    let remove = "/wagate.v1.BroadcastsService/RemoveSuppression";
    grpc.remove_suppression(grpc_signed(
        &pw,
        remove,
        RemoveSuppressionRequest {
            phone_number: a.phone_number.clone(),
        },
    ))
    .await
    .unwrap();
    let again = grpc
        .remove_suppression(grpc_signed(
            &pw,
            remove,
            RemoveSuppressionRequest {
                phone_number: a.phone_number.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        again.metadata().get("x-error-code").unwrap(),
        "SUPPRESSION_NOT_FOUND"
    );
    t.shutdown().await;
}

/// The texts a session received so far.
async fn received(t: &TestApp, session_id: &str) -> Vec<String> {
    let db = t.db.open();
    let id = wagate::values::SessionId::from(session_id);
    db.run(move |c| wagate::storage::inbound::list_inbound(c, &id, 100, 0))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.body)
        .collect()
}

async fn broadcasts_reach_recipients_with_the_rendered_text(db: TestDb) {
    // Test-sized pacing by default; the contact-list campaign asks for its own.
    let t = TestApp::init(db)
        .configure(|s| {
            s.broadcasts.pacing_min = std::time::Duration::ZERO;
            s.broadcasts.pacing_max = std::time::Duration::ZERO;
        })
        .with_sessions(3)
        .start()
        .await;
    let (p, a, b, c) = (
        t.project().clone(),
        t.session(0).clone(),
        t.session(1).clone(),
        t.session(2).clone(),
    );
    let q = Qontak::new(&t, &p);
    let template = json!({
        "name": "invoice", "category": "UTILITY", "language": "id",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Invoice"},
            {"type": "BODY", "text": "Hi {{1}}, your bill is {{2}}."},
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Pay", "url": "https://pay.example/{{1}}"}]}
        ]
    });
    let (code, made) = q
        .post("/qontak/chat/v1/templates/whatsapp", &template)
        .await;
    assert_eq!(code, 201, "{made}");
    let tid = made["data"]["id"].as_str().unwrap().to_owned();

    // Direct, as Qontak clients send it; a wrong count is the 422 and creates nothing.
    let mut direct = json!({
        "to_number": b.phone_number, "to_name": "Budi",
        "message_template_id": tid, "channel_integration_id": a.session_id,
        "language": {"code": "id"},
        "parameters": {
            "body": [
                {"key": "1", "value": "customer_name", "value_text": "Budi"},
                {"key": 2, "value": "amount", "value_text": "Rp 50.000"}
            ],
            "buttons": [{"index": "0", "type": "url", "value": "inv-1"}]
        }
    });
    let mut short = direct.clone();
    short["parameters"]["body"].as_array_mut().unwrap().pop();
    let wrong = q
        .post("/qontak/chat/v1/broadcasts/whatsapp/direct", &short)
        .await;
    assert_qontak_error(&wrong, 422, "TEMPLATE_VARIABLES_MISMATCH");
    assert_eq!(
        wrong.1["error"]["messages"][0],
        "Message Template has 2 variable, please adjust your payload."
    );
    let (code, sent) = q
        .post("/qontak/chat/v1/broadcasts/whatsapp/direct", &direct)
        .await;
    assert_eq!(code, 201, "{sent}");
    let d = &sent["data"];
    assert_eq!(
        d["message_status_count"],
        json!({"failed": 0, "delivered": 0, "read": 0, "pending": 0, "sent": 0})
    );
    assert_eq!(
        d["parameters"]["body"],
        json!({"1": "customer_name", "2": "amount"})
    );
    assert_eq!(
        d["contact_extra"],
        json!({"customer_name": "Budi", "amount": "Rp 50.000"})
    );
    assert_eq!(d["message_template"]["id"], tid.as_str());
    assert_eq!(d["channel_integration_id"], a.session_id.as_str());
    assert_eq!(
        (
            d["execute_type"].as_str(),
            d["message_broadcast_error"].as_str()
        ),
        (Some("immediately"), Some("n/a"))
    );
    let direct_id = d["id"].as_str().unwrap().to_owned();
    let text = "*Invoice*\n\nHi Budi, your bill is Rp 50.000.\n\nPay: https://pay.example/inv-1\n\n_Reply STOP to opt out_";
    eventually(30, "B got the direct broadcast", || async {
        received(&t, &b.session_id)
            .await
            .iter()
            .any(|m| m == text)
            .then_some(())
    })
    .await;
    let log_path = format!("/qontak/chat/v1/broadcasts/{direct_id}/whatsapp/log");
    let entry = eventually(30, "the log says delivered", || async {
        let (code, log) = q.get(&log_path).await;
        assert_eq!(code, 200, "{log}");
        let e = log["data"][0].clone();
        matches!(e["status"].as_str(), Some("delivered" | "read")).then_some(e)
    })
    .await;
    assert_eq!(entry["contact_phone_number"], b.phone_number.as_str());
    assert_eq!(entry["contact_full_name"], "Budi");
    assert_eq!(entry["whatsapp_error_message"], "n/a");
    assert_eq!(entry["is_pacing"], false);
    assert_eq!(entry["messages_broadcast_id"], direct_id.as_str());
    assert!(entry["whatsapp_message_id"].is_string(), "{entry}");
    // B writes back: the recipient has replied (not a count of Qontak's own).
    let (code, body) = t
        .send_json(
            &p.via(&b),
            json!({"recipient": a.phone_number, "message": "thanks!"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    eventually(30, "the log says replied", || async {
        let (_, log) = q.get(&log_path).await;
        (log["data"][0]["status"] == "replied").then_some(())
    })
    .await;
    let (_, detail) = q
        .get(&format!("/qontak/chat/v1/broadcasts/{direct_id}/whatsapp"))
        .await;
    let counts = &detail["data"]["message_status_count"];
    assert_eq!(
        counts["delivered"].as_i64().unwrap() + counts["read"].as_i64().unwrap(),
        1,
        "{detail}"
    );

    // A contact list (B, C and a suppressed number) through the native gRPC call.
    let csv = format!(
        "phone_number,full_name,amount\n{},Budi,Rp 1\n{},Cici,Rp 2\n6289900001111,Dodi,Rp 3\n",
        b.phone_number, c.phone_number
    );
    let (ct, body) = wagate::client::Multipart::new()
        .text("name", "customers")
        .file("file", "c.csv", "text/csv", csv.as_bytes())
        .finish();
    let (code, list) = read(
        q.request(
            reqwest::Method::POST,
            "/qontak/chat/v1/contacts/contact_lists/async",
        )
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{list}");
    let list_id = list["data"]["id"].as_str().unwrap().to_owned();
    let path = format!("/qontak/chat/v1/contacts/contact_lists/{list_id}");
    finished("the list", || q.get(&path)).await;
    let pw = p.project_wide();
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    grpc.add_suppression(grpc_signed(
        &pw,
        "/wagate.v1.BroadcastsService/AddSuppression",
        AddSuppressionRequest {
            phone_number: "6289900001111".into(),
            note: String::new(),
        },
    ))
    .await
    .unwrap();
    let bulk = json!({
        "name": "December", "message_template_id": tid, "contact_list_id": list_id,
        "channel_integration_id": a.session_id, "language": {"code": "id"},
        "parameters": {
            "body": [{"key": "1", "value": "full_name"}, {"key": "2", "value": "amount"}],
            "buttons": [{"index": "0", "type": "url", "value": "phone_number"}]
        },
        "pacing": {"min_delay_ms": 700, "max_delay_ms": 900}
    });
    let (code, made) = q.post("/qontak/chat/v1/broadcasts/whatsapp", &bulk).await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["data"]["recipients_total"], 3);
    assert_eq!(made["data"]["contact_list_id"], list_id.as_str());
    let bulk_id = made["data"]["id"].as_str().unwrap().to_owned();
    let to = |name: &str, amount: &str, phone: &str| {
        format!(
            "*Invoice*\n\nHi {name}, your bill is {amount}.\n\nPay: https://pay.example/{phone}\n\n_Reply STOP to opt out_"
        )
    };
    for (session, want) in [
        (&b, to("Budi", "Rp 1", &b.phone_number)),
        (&c, to("Cici", "Rp 2", &c.phone_number)),
    ] {
        eventually(30, "the list broadcast arrives", || async {
            received(&t, &session.session_id)
                .await
                .contains(&want)
                .then_some(())
        })
        .await;
    }
    let log = eventually(30, "the list log settles", || {
        let mut grpc = grpc.clone();
        let pw = pw.clone();
        let bulk_id = bulk_id.clone();
        async move {
            let r = grpc
                .list_broadcast_recipients(grpc_signed(
                    &pw,
                    "/wagate.v1.BroadcastsService/ListBroadcastRecipients",
                    wagate::proto::v1::ListBroadcastRecipientsRequest {
                        broadcast_id: bulk_id,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            r.recipients
                .iter()
                .all(|x| matches!(x.status.as_str(), "delivered" | "read" | "failed"))
                .then_some(r)
        }
    })
    .await;
    assert_eq!(log.total, 3);
    // Paced: the second message through A went at least the campaign's gap after the first.
    let sent: Vec<i64> = log
        .recipients
        .iter()
        .filter_map(|x| {
            x.sent_at
                .as_ref()
                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        })
        .collect();
    assert_eq!(sent.len(), 2, "{log:?}");
    assert!(
        (sent[1] - sent[0]).abs() >= 600,
        "gap {} ms",
        (sent[1] - sent[0]).abs()
    );
    let dodi = log
        .recipients
        .iter()
        .find(|x| x.full_name == "Dodi")
        .unwrap();
    assert_eq!(
        (dodi.status.as_str(), dodi.error_code.as_str()),
        ("failed", "OPTED_OUT")
    );
    let got = grpc
        .get_broadcast(grpc_signed(
            &pw,
            "/wagate.v1.BroadcastsService/GetBroadcast",
            wagate::proto::v1::GetBroadcastRequest {
                broadcast_id: bulk_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .broadcast
        .unwrap();
    let counts = got.counts.unwrap();
    assert_eq!((counts.delivered + counts.read, counts.failed), (2, 1));
    let done = eventually(10, "completed", || async {
        let (_, d) = q
            .get(&format!("/qontak/chat/v1/broadcasts/{bulk_id}/whatsapp"))
            .await;
        (d["data"]["execute_status"] == "done").then_some(d)
    })
    .await;
    assert_eq!(done["data"]["state"], "completed");

    // Scheduled, paused, resumed (still scheduled), cancelled: nothing is sent.
    direct["send_at"] = json!(
        (chrono::Utc::now() + chrono::Duration::hours(1))
            .with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).unwrap())
            .to_rfc3339()
    );
    let (code, later) = q
        .post("/qontak/chat/v1/broadcasts/whatsapp/direct", &direct)
        .await;
    assert_eq!(code, 201, "{later}");
    assert_eq!(later["data"]["execute_status"], "todo");
    assert_eq!(later["data"]["execute_type"], "specific");
    let later_id = later["data"]["id"].as_str().unwrap().to_owned();
    let act = |m: &'static str| {
        let mut grpc = grpc.clone();
        let (pw, id) = (pw.clone(), later_id.clone());
        async move {
            let path = format!("/wagate.v1.BroadcastsService/{m}Broadcast");
            match m {
                "Pause" => grpc
                    .pause_broadcast(grpc_signed(
                        &pw,
                        &path,
                        wagate::proto::v1::PauseBroadcastRequest { broadcast_id: id },
                    ))
                    .await
                    .map(|r| r.into_inner().broadcast.unwrap().state),
                "Resume" => grpc
                    .resume_broadcast(grpc_signed(
                        &pw,
                        &path,
                        wagate::proto::v1::ResumeBroadcastRequest { broadcast_id: id },
                    ))
                    .await
                    .map(|r| r.into_inner().broadcast.unwrap().state),
                _ => grpc
                    .cancel_broadcast(grpc_signed(
                        &pw,
                        &path,
                        wagate::proto::v1::CancelBroadcastRequest { broadcast_id: id },
                    ))
                    .await
                    .map(|r| r.into_inner().broadcast.unwrap().state),
            }
        }
    };
    assert_eq!(act("Pause").await.unwrap(), "paused");
    assert_eq!(act("Resume").await.unwrap(), "scheduled");
    assert_eq!(act("Cancel").await.unwrap(), "cancelled");
    let again = act("Cancel").await.unwrap_err();
    assert_eq!(
        again.metadata().get("x-error-code").unwrap(),
        "BROADCAST_STATE_CONFLICT"
    );
    let (_, log) = q
        .get(&format!(
            "/qontak/chat/v1/broadcasts/{later_id}/whatsapp/log"
        ))
        .await;
    assert_eq!(log["data"][0]["status"], "failed");
    assert!(
        log["data"][0]["whatsapp_error_message"]
            .as_str()
            .unwrap()
            .starts_with("CANCELLED")
    );

    // Scheduled a few seconds ahead: starts on time.
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    direct["send_at"] = json!(at.to_rfc3339());
    direct["to_number"] = json!(c.phone_number);
    direct["parameters"]["body"][0]["value_text"] = json!("Later");
    let (code, soon) = q
        .post("/qontak/chat/v1/broadcasts/whatsapp/direct", &direct)
        .await;
    assert_eq!(code, 201, "{soon}");
    let want = "*Invoice*\n\nHi Later, your bill is Rp 50.000.\n\nPay: https://pay.example/inv-1\n\n_Reply STOP to opt out_".to_owned();
    eventually(40, "the scheduled broadcast arrives", || async {
        received(&t, &c.session_id)
            .await
            .contains(&want)
            .then_some(())
    })
    .await;
    assert!(chrono::Utc::now() >= at, "not before its time");
    let (code, all) = q
        .get("/qontak/chat/v1/broadcasts/whatsapp?offset=1&limit=10")
        .await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["meta"]["pagination"]["total"], 4);
    t.shutdown().await;
}

// --- account health, campaign events, restarts and schedules ---

/// A template `Hi {{1}}.` over Qontak; its id.
async fn hello_template(q: &Qontak<'_>) -> String {
    let template = json!({
        "name": "hello", "category": "MARKETING", "language": "en",
        "components": [{"type": "BODY", "text": "Hi {{1}}."}]
    });
    let (code, made) = q
        .post("/qontak/chat/v1/templates/whatsapp", &template)
        .await;
    assert_eq!(code, 201, "{made}");
    made["data"]["id"].as_str().unwrap().to_owned()
}

/// A contact list of these sessions (their numbers, their names), imported; its id.
async fn list_of(q: &Qontak<'_>, to: &[&Session]) -> String {
    let mut csv = "phone_number,full_name\n".to_owned();
    for s in to {
        csv.push_str(&format!("{},{}\n", s.phone_number, s.name));
    }
    let (ct, body) = wagate::client::Multipart::new()
        .text("name", "recipients")
        .file("file", "r.csv", "text/csv", csv.as_bytes())
        .finish();
    let (code, list) = read(
        q.request(
            reqwest::Method::POST,
            "/qontak/chat/v1/contacts/contact_lists/async",
        )
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{list}");
    let id = list["data"]["id"].as_str().unwrap().to_owned();
    let path = format!("/qontak/chat/v1/contacts/contact_lists/{id}");
    finished("the list", || q.get(&path)).await;
    id
}

/// A campaign of `Hi {{full_name}}.` over a list through `via`, a fixed gap of `gap_ms`
/// between two messages of a session; its id.
async fn campaign(q: &Qontak<'_>, tid: &str, list: &str, via: &[&Session], gap_ms: i64) -> String {
    let ids: Vec<&str> = via.iter().map(|s| s.session_id.as_str()).collect();
    let bulk = json!({
        "name": "health", "message_template_id": tid, "contact_list_id": list,
        "channel_integration_ids": ids, "language": {"code": "en"},
        "parameters": {"body": [{"key": "1", "value": "full_name"}]},
        "pacing": {"min_delay_ms": gap_ms, "max_delay_ms": gap_ms}
    });
    let (code, made) = q.post("/qontak/chat/v1/broadcasts/whatsapp", &bulk).await;
    assert_eq!(code, 201, "{made}");
    made["data"]["id"].as_str().unwrap().to_owned()
}

async fn broadcast_of(t: &TestApp, id: &str) -> wagate::proto::v1::Broadcast {
    let pw = t.project().project_wide();
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    grpc.get_broadcast(grpc_signed(
        &pw,
        "/wagate.v1.BroadcastsService/GetBroadcast",
        wagate::proto::v1::GetBroadcastRequest {
            broadcast_id: id.to_owned(),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .broadcast
    .unwrap()
}

async fn broadcast_in(t: &TestApp, id: &str, state: &str) -> wagate::proto::v1::Broadcast {
    eventually(30, &format!("the broadcast {state}"), || async {
        let b = broadcast_of(t, id).await;
        (b.state == state).then_some(b)
    })
    .await
}

/// A project-wide webhook to the test's receiver at `path` for these events.
async fn hook_for(t: &TestApp, path: &str, events: &[&str]) {
    let mut c =
        wagate::proto::v1::webhooks_service_client::WebhooksServiceClient::connect(t.base.clone())
            .await
            .unwrap();
    c.create_webhook(grpc_signed(
        &t.project().project_wide(),
        "/wagate.v1.WebhooksService/CreateWebhook",
        wagate::proto::v1::CreateWebhookRequest {
            session_id: String::new(),
            url: t.receiver().url(path),
            events: events.iter().map(|e| e.to_string()).collect(),
        },
    ))
    .await
    .unwrap();
}

/// The events delivered at `path` so far, of one kind.
fn events_at(t: &TestApp, path: &str, kind: &str) -> Vec<Value> {
    t.receiver()
        .delivered(path)
        .iter()
        .map(|h| h.json())
        .filter(|e| e["event"] == kind)
        .collect()
}

/// Messages wasim relayed from `sender` (its phone) to anyone, each once.
async fn relayed_from(t: &TestApp, sender: &str) -> Vec<Value> {
    let log = t.wa().messages().await.unwrap();
    let mine: Vec<Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"].as_str().unwrap_or_default().starts_with(sender))
        .filter(|m| m["type"] == "text")
        .cloned()
        .collect();
    for m in &mine {
        assert_eq!(m["times_relayed"], 1, "relayed once: {m}");
    }
    mine
}

/// Each of `to` received exactly one message, `Hi <its name>.`.
async fn each_got_one(t: &TestApp, to: &[&Session]) {
    for s in to {
        let want = format!("Hi {}.", s.name);
        eventually(30, &format!("{} got its message", s.name), || async {
            received(t, &s.session_id)
                .await
                .contains(&want)
                .then_some(())
        })
        .await;
    }
    for s in to {
        assert_eq!(
            received(t, &s.session_id).await,
            vec![format!("Hi {}.", s.name)],
            "exactly one message to {}",
            s.name
        );
    }
}

async fn restart_session(t: &TestApp, id: &str) {
    let mut c = t.sessions_client().await;
    c.restart_session(grpc_signed(
        &t.project().project_wide(),
        "/wagate.v1.SessionsService/RestartSession",
        wagate::proto::v1::RestartSessionRequest {
            session_id: id.to_owned(),
        },
    ))
    .await
    .unwrap();
}

/// The campaign's only session is banned at WhatsApp: the campaign pauses by health (with
/// why, `session.health` and `broadcast.status` webhooks); once the ban is lifted and the
/// session restarted it resumes by itself and completes, every recipient reached once.
async fn a_ban_pauses_the_campaign_until_the_session_recovers(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(3)
        .with_receiver()
        .start()
        .await;
    let (p, a, b, c) = (
        t.project().clone(),
        t.session(0).clone(),
        t.session(1).clone(),
        t.session(2).clone(),
    );
    hook_for(&t, "/h", &["session.health", "broadcast.status"]).await;
    let q = Qontak::new(&t, &p);
    let tid = hello_template(&q).await;
    let list = list_of(&q, &[&b, &c]).await;
    // A 6 s gap: the first recipient goes at once, the second waits long enough to ban A.
    let id = campaign(&q, &tid, &list, &[&a], 6000).await;
    let first = eventually(30, "the first recipient reached", || async {
        for s in [&b, &c] {
            if !received(&t, &s.session_id).await.is_empty() {
                return Some(s.session_id.clone());
            }
        }
        None
    })
    .await;
    let held = broadcast_of(&t, &id).await;
    assert_eq!(held.state, "running");
    assert!(held.waiting_reason.contains("gap"), "{held:?}");
    assert!(held.eta.is_some(), "{held:?}");

    t.wa().ban(&a.phone_number, 3600).await.unwrap();
    let paused = broadcast_in(&t, &id, "paused").await;
    assert!(
        paused
            .waiting_reason
            .starts_with("paused by health: session A banned"),
        "{paused:?}"
    );
    assert!(paused.eta.is_none(), "{paused:?}");
    let health = eventually(30, "session.health delivered", || async {
        events_at(&t, "/h", "session.health").into_iter().next()
    })
    .await;
    assert_eq!(health["sessionId"], a.session_id.as_str());
    assert_eq!(health["health"], "unhealthy");
    assert!(
        health["reason"].as_str().unwrap().contains("banned"),
        "{health}"
    );
    assert!(health["since"].is_string(), "{health}");
    let status = eventually(30, "broadcast.status paused delivered", || async {
        events_at(&t, "/h", "broadcast.status")
            .into_iter()
            .find(|e| e["state"] == "paused")
    })
    .await;
    assert_eq!(status["broadcastId"], id.as_str());
    assert_eq!(status["name"], "health");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .starts_with("paused by health"),
        "{status}"
    );
    assert_eq!(status["counts"]["created"], 1, "{status}");
    let second = if first == b.session_id { &c } else { &b };
    assert!(received(&t, &second.session_id).await.is_empty());
    // Resumed by hand while A is still banned: health pauses it again, nothing is sent.
    let pw = p.project_wide();
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    grpc.resume_broadcast(grpc_signed(
        &pw,
        "/wagate.v1.BroadcastsService/ResumeBroadcast",
        wagate::proto::v1::ResumeBroadcastRequest {
            broadcast_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    eventually(30, "paused by health again", || async {
        let all = events_at(&t, "/h", "broadcast.status");
        (all.len() >= 3).then_some(())
    })
    .await;
    let again = broadcast_in(&t, &id, "paused").await;
    assert!(
        again.waiting_reason.starts_with("paused by health"),
        "{again:?}"
    );
    assert!(received(&t, &second.session_id).await.is_empty());

    // The ban lifted and the session restarted: the campaign resumes by itself.
    t.wa().ban(&a.phone_number, 0).await.unwrap();
    restart_session(&t, &a.session_id).await;
    let done = broadcast_in(&t, &id, "completed").await;
    each_got_one(&t, &[&b, &c]).await;
    assert_eq!(relayed_from(&t, &a.phone_number).await.len(), 2);
    assert!(
        done.waiting_reason.is_empty() && done.eta.is_none(),
        "{done:?}"
    );
    let healthy = eventually(30, "session.health healthy delivered", || async {
        events_at(&t, "/h", "session.health")
            .into_iter()
            .find(|e| e["health"] == "healthy")
    })
    .await;
    assert_eq!(healthy["sessionId"], a.session_id.as_str());
    let states = eventually(30, "broadcast.status completed delivered", || async {
        let all = events_at(&t, "/h", "broadcast.status");
        all.iter().any(|e| e["state"] == "completed").then(|| {
            all.iter()
                .map(|e| e["state"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
    })
    .await;
    assert_eq!(
        states,
        ["paused", "running", "paused", "running", "completed"],
        "in order"
    );
    let reasons: Vec<Value> = events_at(&t, "/h", "broadcast.status")
        .iter()
        .map(|e| e["reason"].clone())
        .collect();
    assert_eq!(reasons[1], "resumed by user");
    assert_eq!(
        reasons[3],
        "resumed: a session of the broadcast is healthy again"
    );
    let completed = events_at(&t, "/h", "broadcast.status").pop().unwrap();
    assert_eq!(completed["counts"]["created"], 0, "{completed}");
    assert_eq!(
        completed["counts"]["sent"].as_i64().unwrap()
            + completed["counts"]["pending"].as_i64().unwrap()
            + completed["counts"]["delivered"].as_i64().unwrap()
            + completed["counts"]["read"].as_i64().unwrap(),
        2,
        "{completed}"
    );
    t.shutdown().await;
}

/// Two sessions; one is banned mid-campaign: its remaining recipients go through the other,
/// the campaign does not pause, and every recipient gets exactly one message.
async fn a_banned_session_hands_its_recipients_to_the_other(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(6)
        .with_receiver()
        .start()
        .await;
    let p = t.project().clone();
    let s: Vec<Session> = (0..6).map(|i| t.session(i).clone()).collect();
    let (a, b, to) = (&s[0], &s[1], [&s[2], &s[3], &s[4], &s[5]]);
    hook_for(&t, "/h", &["session.health", "broadcast.status"]).await;
    let q = Qontak::new(&t, &p);
    let tid = hello_template(&q).await;
    let list = list_of(&q, &to).await;
    // Two recipients each; the first of each goes at once, the second 3 s later.
    let id = campaign(&q, &tid, &list, &[a, b], 3000).await;
    eventually(30, "the first two reached", || async {
        let mut n = 0;
        for r in to {
            n += received(&t, &r.session_id).await.len();
        }
        (n >= 2).then_some(())
    })
    .await;
    t.wa().ban(&a.phone_number, 3600).await.unwrap();
    eventually(30, "A unhealthy", || async {
        events_at(&t, "/h", "session.health")
            .into_iter()
            .find(|e| e["sessionId"] == a.session_id.as_str() && e["health"] == "unhealthy")
    })
    .await;
    let done = broadcast_in(&t, &id, "completed").await;
    each_got_one(&t, &to).await;
    let (via_a, via_b) = (
        relayed_from(&t, &a.phone_number).await,
        relayed_from(&t, &b.phone_number).await,
    );
    assert_eq!(via_a.len() + via_b.len(), 4, "{via_a:?} {via_b:?}");
    assert_eq!(via_a.len(), 1, "A sent only its first before the ban");
    // The log shows where each went; the campaign never paused.
    let pw = p.project_wide();
    let mut grpc = BroadcastsServiceClient::connect(t.base.clone())
        .await
        .unwrap();
    let log = grpc
        .list_broadcast_recipients(grpc_signed(
            &pw,
            "/wagate.v1.BroadcastsService/ListBroadcastRecipients",
            wagate::proto::v1::ListBroadcastRecipientsRequest {
                broadcast_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let through_b = log
        .recipients
        .iter()
        .filter(|r| r.session_id == b.session_id)
        .count();
    assert_eq!(through_b, 3, "{log:?}");
    assert!(
        !events_at(&t, "/h", "broadcast.status")
            .iter()
            .any(|e| e["state"] == "paused")
    );
    assert_eq!(done.counts.unwrap().failed, 0);
    t.shutdown().await;
}

/// The gateway stops mid-campaign and starts again on the same database: every recipient
/// gets its message exactly once (counted at wasim and at the recipients).
async fn a_restart_mid_campaign_loses_and_repeats_nothing(db: TestDb) {
    let t = TestApp::init(db).with_sessions(4).start().await;
    let p = t.project().clone();
    let s: Vec<Session> = (0..4).map(|i| t.session(i).clone()).collect();
    let (a, to) = (&s[0], [&s[1], &s[2], &s[3]]);
    let q = Qontak::new(&t, &p);
    let tid = hello_template(&q).await;
    let list = list_of(&q, &to).await;
    let id = campaign(&q, &tid, &list, &[a], 1500).await;
    let before = eventually(30, "the first reached", || async {
        let mut n = 0;
        for r in to {
            n += received(&t, &r.session_id).await.len();
        }
        (n >= 1).then_some(n)
    })
    .await;
    assert!(before < 3, "stopped mid-campaign");
    let t = t.stop().await.start().await;
    let done = broadcast_in(&t, &id, "completed").await;
    assert_eq!(done.recipients_total, 3);
    each_got_one(&t, &to).await;
    assert_eq!(relayed_from(&t, &a.phone_number).await.len(), 3);
    t.shutdown().await;
}

/// A campaign scheduled a few seconds ahead starts at its time: not before, and within
/// about a second after (with its `broadcast.status` running event).
async fn a_scheduled_campaign_starts_on_time(db: TestDb) {
    let t = TestApp::init(db)
        .with_sessions(2)
        .with_receiver()
        .start()
        .await;
    let (p, a, b) = (
        t.project().clone(),
        t.session(0).clone(),
        t.session(1).clone(),
    );
    hook_for(&t, "/h", &["broadcast.status"]).await;
    let q = Qontak::new(&t, &p);
    let tid = hello_template(&q).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let direct = json!({
        "to_number": b.phone_number, "to_name": "B",
        "message_template_id": tid, "channel_integration_id": a.session_id,
        "language": {"code": "en"},
        "parameters": {"body": [{"key": "1", "value": "name", "value_text": "B"}]},
        "send_at": at.with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).unwrap()).to_rfc3339(),
    });
    let (code, made) = q
        .post("/qontak/chat/v1/broadcasts/whatsapp/direct", &direct)
        .await;
    assert_eq!(code, 201, "{made}");
    let id = made["data"]["id"].as_str().unwrap().to_owned();
    let waiting = broadcast_of(&t, &id).await;
    assert_eq!(
        (waiting.state.as_str(), waiting.waiting_reason.as_str()),
        ("scheduled", "scheduled")
    );
    let send_at = waiting.send_at.unwrap();
    let send_at_ms = send_at.seconds * 1000 + i64::from(send_at.nanos) / 1_000_000;
    assert!(
        (send_at_ms - at.timestamp_millis()).abs() < 1000,
        "{send_at:?}"
    );
    assert_eq!(
        waiting.eta,
        Some(send_at),
        "one recipient: done when it starts"
    );
    eventually(30, "B got it", || async {
        (!received(&t, &b.session_id).await.is_empty()).then_some(())
    })
    .await;
    let started = broadcast_of(&t, &id).await.started_at.unwrap();
    let started_ms = started.seconds * 1000 + i64::from(started.nanos) / 1_000_000;
    let late = started_ms - send_at_ms;
    println!("scheduled campaign started {late} ms after send_at");
    assert!(late >= 0, "started {late} ms early");
    assert!(late <= 1500, "started {late} ms late");
    let running = eventually(30, "broadcast.status running", || async {
        events_at(&t, "/h", "broadcast.status")
            .into_iter()
            .find(|e| e["state"] == "running")
    })
    .await;
    assert_eq!(running["broadcastId"], id.as_str());
    broadcast_in(&t, &id, "completed").await;
    t.shutdown().await;
}

/// A session that cannot get back in (WhatsApp holds its logins) is unhealthy once it has
/// been down for `down_after`: the campaign messages waiting in its queue, never written to
/// WhatsApp, are taken back (`REROUTED`) and go through the campaign's other session; each
/// recipient gets exactly one message. Let in again, it is healthy again.
async fn a_session_down_for_long_gives_its_queue_to_the_other(db: TestDb) {
    let t = TestApp::init(db)
        .configure(|s| s.broadcast_health.down_after = std::time::Duration::from_secs(2))
        .with_sessions(4)
        .with_receiver()
        .start()
        .await;
    let p = t.project().clone();
    let s: Vec<Session> = (0..4).map(|i| t.session(i).clone()).collect();
    let (a, b, to) = (&s[0], &s[1], [&s[2], &s[3]]);
    hook_for(&t, "/h", &["session.health", "message.status"]).await;
    let q = Qontak::new(&t, &p);
    let tid = hello_template(&q).await;
    let list = list_of(&q, &to).await;
    let mut c = t.sessions_client().await;
    t.wa().hold_logins(true).await.unwrap();
    t.wa().kick(&a.phone_number).await.unwrap();
    eventually(20, "A not connected", || {
        let (mut c, pw) = (c.clone(), p.project_wide());
        async move {
            let st = crate::support::session::get(&mut c, &pw, &a.session_id).await;
            (st.state != wagate::proto::v1::SessionState::Connected as i32).then_some(())
        }
    })
    .await;
    let id = campaign(&q, &tid, &list, &[a, b], 0).await;
    let health = eventually(30, "A unhealthy", || async {
        events_at(&t, "/h", "session.health")
            .into_iter()
            .find(|e| e["sessionId"] == a.session_id.as_str())
    })
    .await;
    assert_eq!(health["health"], "unhealthy");
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .starts_with("session A disconnected since"),
        "{health}"
    );
    broadcast_in(&t, &id, "completed").await;
    each_got_one(&t, &to).await;
    assert_eq!(relayed_from(&t, &b.phone_number).await.len(), 2);
    let rerouted = eventually(30, "the taken-back message failed as REROUTED", || async {
        events_at(&t, "/h", "message.status")
            .into_iter()
            .find(|e| e["status"] == "failed")
    })
    .await;
    assert_eq!(rerouted["error"]["code"], "REROUTED", "{rerouted}");
    assert_eq!(
        rerouted["payload"]["broadcast_id"],
        id.as_str(),
        "{rerouted}"
    );
    let done = broadcast_of(&t, &id).await.counts.unwrap();
    assert_eq!((done.failed, done.created), (0, 0), "{done:?}");

    t.wa().hold_logins(false).await.unwrap();
    crate::support::session::wait_state(
        &mut c,
        &p.project_wide(),
        &a.session_id,
        wagate::proto::v1::SessionState::Connected,
        30,
    )
    .await;
    eventually(30, "A healthy again", || async {
        events_at(&t, "/h", "session.health")
            .into_iter()
            .find(|e| e["sessionId"] == a.session_id.as_str() && e["health"] == "healthy")
    })
    .await;
    assert!(relayed_from(&t, &a.phone_number).await.is_empty());
    t.shutdown().await;
}
