//! Broadcasts end to end: templates over gRPC (signed) and their REST transcoding (SAK
//! credentials), the render preview, and the Qontak-compatible surface called the way
//! Mekari's SDK calls it.

use serde_json::{Value, json};
use wagate::proto::v1::broadcasts_service_client::BroadcastsServiceClient;
use wagate::proto::v1::{
    CreateTemplateRequest, GetTemplateRequest, ListTemplatesRequest, RenderTemplateRequest,
    TemplateButton, TemplateHeader, TemplateParameters, TemplateVariant,
};

use crate::on_both_backends;
use crate::sak_api::Sak;
use crate::support::qontak::{Qontak, assert_qontak_error};
use crate::support::{TestApp, TestDb, assert_error, grpc_signed};

on_both_backends!(
    templates_over_grpc_and_rest_render_the_same_text,
    qontak_surface_signed_like_the_mekari_sdk,
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
