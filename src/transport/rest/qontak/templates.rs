//! WhatsApp templates in Qontak's shape: `GET/POST /templates/whatsapp`,
//! `GET /templates/{id}/whatsapp`, transcoded onto `BroadcastsService`. Creation takes Meta's
//! `components` (HEADER, BODY, FOOTER, BUTTONS), per language in `attributes` or at the top
//! level; a created template is `APPROVED` at once. A Qontak template object has one
//! language: wagate answers a template's first variant, and lists all in `languages`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MAX_GET_BYTES, MAX_JSON_BYTES, Mekari, Page, Paging, QPath, QQuery};
use super::{QontakErrorBody, QontakResult, json_body, ok, page, qontak_time};
use crate::domain::Gateway;
use crate::error::Error;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::proto::v1::{
    CreateTemplateRequest, GetTemplateRequest, ListTemplatesRequest, Template, TemplateButton,
    TemplateHeader, TemplateVariant,
};
use crate::transport::grpc::broadcasts::BroadcastsApi;
use crate::transport::rest::auth::secured;
use crate::transport::rest::call;

type SignedGet = Mekari<MAX_GET_BYTES>;
type SignedJson = Mekari<MAX_JSON_BYTES>;

/// How Qontak shows an OTP copy-code button: a URL button to WhatsApp's copy-code link.
const OTP_URL: &str = "https://www.whatsapp.com/otp/code/?otp_type=COPY_CODE&code=otp{{1}}";
const SECURITY_RECOMMENDATION: &str = "For your security, do not share this code.";
const AUTHENTICATION_BODY: &str = "*{{1}}* is your verification code.";

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SignedGet, _>(routes!(list)))
        .routes(secured::<SignedJson, _>(routes!(create)))
        .routes(secured::<SignedGet, _>(routes!(get)))
}

fn api(gw: &Gateway) -> BroadcastsApi {
    BroadcastsApi::new(gw.clone())
}

#[derive(Serialize, ToSchema)]
pub struct QontakHeader {
    /// TEXT, IMAGE, VIDEO or DOCUMENT.
    format: String,
    text: Option<String>,
    /// `{"header_handle": [url]}` for a media header with a default media.
    #[schema(value_type = Option<Object>)]
    example: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct QontakButton {
    /// URL, PHONE_NUMBER or QUICK_REPLY; an OTP copy code is a URL button to WhatsApp's
    /// copy-code link, as Qontak shows it.
    #[serde(rename = "type")]
    kind: String,
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_number: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct QontakTemplate {
    id: String,
    /// The project id.
    organization_id: String,
    name: String,
    /// The first variant's language.
    #[schema(example = "id")]
    language: String,
    /// Every language of the template.
    languages: Vec<String>,
    header: Option<QontakHeader>,
    body: String,
    footer: Option<String>,
    buttons: Vec<QontakButton>,
    /// Always APPROVED.
    #[schema(example = "APPROVED")]
    status: String,
    category: String,
    quality_rating: Option<String>,
    #[schema(example = "Neutral")]
    quality_rating_text: String,
    #[serde(rename = "type")]
    #[schema(example = "campaign")]
    kind: String,
    #[schema(value_type = Option<Object>)]
    analysis: Option<Value>,
    #[schema(value_type = Option<Object>)]
    probability: Option<Value>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

pub(crate) fn qontak_template(t: Template, project_id: &str) -> QontakTemplate {
    let languages = t.variants.iter().map(|v| v.language.clone()).collect();
    let v = t.variants.into_iter().next().unwrap_or_default();
    let header = v.header.map(|h| {
        let media = h.format != "TEXT" && !h.media_url.is_empty();
        QontakHeader {
            text: (h.format == "TEXT").then_some(h.text),
            example: media.then(|| serde_json::json!({"header_handle": [h.media_url]})),
            format: h.format,
        }
    });
    let buttons = v
        .buttons
        .into_iter()
        .map(|b| {
            let (kind, url) = match b.r#type.as_str() {
                "OTP" => ("URL".to_owned(), Some(OTP_URL.to_owned())),
                _ => (b.r#type, (!b.url.is_empty()).then_some(b.url)),
            };
            QontakButton {
                kind,
                text: b.text,
                url,
                phone_number: (!b.phone_number.is_empty()).then_some(b.phone_number),
            }
        })
        .collect();
    QontakTemplate {
        id: t.template_id,
        organization_id: project_id.to_owned(),
        name: t.name,
        language: v.language,
        languages,
        header,
        body: v.body,
        footer: (!v.footer.is_empty()).then_some(v.footer),
        buttons,
        status: t.status,
        category: t.category,
        quality_rating: None,
        quality_rating_text: "Neutral".into(),
        kind: "campaign".into(),
        analysis: None,
        probability: None,
        created_at: qontak_time(t.created_at),
        updated_at: qontak_time(t.updated_at),
    }
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Only templates whose name contains this.
    query: Option<String>,
    /// The page, from 1.
    offset: Option<String>,
    /// Page size (default 10, at most 100).
    limit: Option<i64>,
}

/// The project's templates.
#[utoipa::path(
    get, path = "/qontak/chat/v1/templates/whatsapp", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListTemplates"))),
    params(ListParams),
    responses(
        (status = 200, body = inline(Page<QontakTemplate>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
    )
)]
pub async fn list(
    State(gw): State<Gateway>,
    QQuery(q): QQuery<ListParams>,
    signed: SignedGet,
) -> QontakResult {
    let paging = Paging::new(q.offset.as_deref(), q.limit)?;
    let project = signed.principal.caller().project.row.id.to_string();
    let msg = ListTemplatesRequest {
        page_size: paging.limit as i32,
        page_token: paging.skip().to_string(),
        query: q.query.unwrap_or_default(),
    };
    let r = call::answer(
        api(&gw)
            .list_templates(call::request(Some(signed.principal), msg))
            .await,
    )?;
    let data = r
        .templates
        .into_iter()
        .map(|t| qontak_template(t, &project))
        .collect();
    Ok(page(data, paging, r.total))
}

/// One template.
#[utoipa::path(
    get, path = "/qontak/chat/v1/templates/{id}/whatsapp", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/GetTemplate"))),
    params(("id" = String, Path, description = "message_template_id")),
    responses(
        (status = 200, body = inline(super::Ok<QontakTemplate>)),
        (status = 401, body = QontakErrorBody), (status = 404, description = "TEMPLATE_NOT_FOUND", body = QontakErrorBody),
    )
)]
pub async fn get(
    State(gw): State<Gateway>,
    QPath(id): QPath<String>,
    signed: SignedGet,
) -> QontakResult {
    let project = signed.principal.caller().project.row.id.to_string();
    let msg = GetTemplateRequest { template_id: id };
    let r = call::answer(
        api(&gw)
            .get_template(call::request(Some(signed.principal), msg))
            .await,
    )?;
    Ok(ok(
        StatusCode::OK,
        qontak_template(r.template.unwrap_or_default(), &project),
    ))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct ComponentExample {
    #[serde(default)]
    header_handle: Vec<String>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct ComponentButton {
    /// URL, PHONE_NUMBER, QUICK_REPLY, OTP (`otp_type` COPY_CODE).
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
    #[serde(default)]
    otp_type: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct Component {
    /// HEADER, BODY, FOOTER or BUTTONS.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    text: Option<String>,
    /// AUTHENTICATION bodies: add "For your security, do not share this code."
    #[serde(default)]
    add_security_recommendation: Option<bool>,
    /// AUTHENTICATION footers: "This code expires in N minutes."
    #[serde(default)]
    code_expiration_minutes: Option<u32>,
    #[serde(default)]
    example: Option<ComponentExample>,
    #[serde(default)]
    buttons: Vec<ComponentButton>,
}

#[derive(Deserialize, ToSchema)]
pub struct Attribute {
    language: String,
    components: Vec<Component>,
}

#[derive(Deserialize, ToSchema)]
pub struct NewTemplate {
    name: String,
    /// MARKETING, UTILITY, AUTHENTICATION, …
    category: String,
    /// One entry per language.
    #[serde(default)]
    attributes: Vec<Attribute>,
    /// Meta's flat form: one language and its components.
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    components: Vec<Component>,
}

/// Meta-style components as one native variant.
fn variant(category: &str, a: Attribute) -> Result<TemplateVariant, Error> {
    let authentication = category.eq_ignore_ascii_case("AUTHENTICATION");
    let mut v = TemplateVariant {
        language: a.language,
        ..TemplateVariant::default()
    };
    for c in a.components {
        match c.kind.to_ascii_uppercase().as_str() {
            "HEADER" => {
                let format = c
                    .format
                    .unwrap_or_else(|| "TEXT".into())
                    .to_ascii_uppercase();
                let media_url = c
                    .example
                    .and_then(|e| e.header_handle.into_iter().next())
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                    .unwrap_or_default();
                v.header = Some(TemplateHeader {
                    format,
                    text: c.text.unwrap_or_default(),
                    media_url,
                });
            }
            "BODY" => {
                let mut body = c.text.unwrap_or_default();
                if body.is_empty() && authentication {
                    body = AUTHENTICATION_BODY.into();
                }
                if c.add_security_recommendation == Some(true) {
                    body = format!("{body} {SECURITY_RECOMMENDATION}");
                }
                v.body = body;
            }
            "FOOTER" => {
                v.footer = match (c.text, c.code_expiration_minutes) {
                    (Some(t), _) if !t.is_empty() => t,
                    (_, Some(n)) => format!("This code expires in {n} minutes."),
                    _ => String::new(),
                };
            }
            "BUTTONS" => {
                for b in c.buttons {
                    let otp = b.kind.eq_ignore_ascii_case("OTP")
                        || b.url
                            .as_deref()
                            .is_some_and(|u| u.contains("otp_type=COPY_CODE"));
                    let kind = if otp {
                        "OTP".to_owned()
                    } else {
                        b.kind.to_ascii_uppercase()
                    };
                    let text = b.text.unwrap_or_else(|| {
                        if otp {
                            "Copy code".into()
                        } else {
                            String::new()
                        }
                    });
                    let _ = b.otp_type;
                    v.buttons.push(TemplateButton {
                        r#type: kind,
                        text,
                        url: if otp {
                            String::new()
                        } else {
                            b.url.unwrap_or_default()
                        },
                        phone_number: b.phone_number.unwrap_or_default(),
                    });
                }
            }
            other => {
                return Err(Error::InvalidTemplate(format!(
                    "component type {other:?} is not HEADER, BODY, FOOTER or BUTTONS"
                )));
            }
        }
    }
    if v.body.is_empty() && authentication {
        v.body = AUTHENTICATION_BODY.into();
    }
    Ok(v)
}

/// Create a template from Meta-style components; it is APPROVED at once.
#[utoipa::path(
    post, path = "/qontak/chat/v1/templates/whatsapp", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CreateTemplate"))),
    request_body = NewTemplate,
    responses(
        (status = 201, body = inline(super::Ok<QontakTemplate>)),
        (status = 400, description = "INVALID_TEMPLATE", body = QontakErrorBody),
        (status = 401, body = QontakErrorBody),
        (status = 409, description = "TEMPLATE_NAME_TAKEN", body = QontakErrorBody),
    )
)]
pub async fn create(State(gw): State<Gateway>, signed: SignedJson) -> QontakResult {
    let req: NewTemplate = json_body(&signed.body)?;
    let project = signed.principal.caller().project.row.id.to_string();
    let mut attributes = req.attributes;
    if !req.components.is_empty() || req.language.is_some() {
        attributes.push(Attribute {
            language: req.language.unwrap_or_else(|| "id".into()),
            components: req.components,
        });
    }
    let variants = attributes
        .into_iter()
        .map(|a| variant(&req.category, a))
        .collect::<Result<_, _>>()?;
    let msg = CreateTemplateRequest {
        name: req.name,
        category: req.category,
        variants,
    };
    let r = call::answer(
        api(&gw)
            .create_template(call::request(Some(signed.principal), msg))
            .await,
    )?;
    Ok(ok(
        StatusCode::CREATED,
        qontak_template(r.template.unwrap_or_default(), &project),
    ))
}
