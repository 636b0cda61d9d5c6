//! The native broadcast API under `/api/v1` in the SAK style (`{success, data}`, camelCase):
//! templates and the render preview, transcoded onto `wagate.v1.BroadcastsService`. Same
//! credentials as the other management routes (the account's JWT or a user API key).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{SakManager, secured};
use super::call;
use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::{Json, OptionalJson, Path, Query};
use super::rfc3339_of;
use crate::domain::Gateway;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::proto::v1::{
    CreateTemplateRequest, DeleteTemplateRequest, GetTemplateRequest, ListTemplatesRequest,
    RenderTemplateRequest, Template, TemplateButton, TemplateHeader, TemplateParameters,
    TemplateVariant, UpdateTemplateRequest,
};
use crate::transport::grpc::broadcasts::BroadcastsApi;
use crate::transport::grpc::convert::non_empty;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SakManager, _>(routes!(create, list)))
        .routes(secured::<SakManager, _>(routes!(get, update, remove)))
        .routes(secured::<SakManager, _>(routes!(render)))
}

fn api(gw: &Gateway) -> BroadcastsApi {
    BroadcastsApi::new(gw.clone())
}

#[derive(Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderJson {
    /// TEXT, IMAGE, VIDEO or DOCUMENT.
    #[schema(example = "TEXT")]
    format: String,
    /// TEXT: with `{{n}}` variables.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    text: String,
    /// Media headers: the media used when a send names none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    media_url: String,
}

#[derive(Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ButtonJson {
    /// URL, PHONE_NUMBER, QUICK_REPLY or OTP.
    #[serde(rename = "type")]
    #[schema(example = "URL")]
    kind: String,
    text: String,
    /// URL buttons; may end with `{{1}}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    url: String,
    /// PHONE_NUMBER buttons.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    phone_number: String,
}

#[derive(Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantJson {
    #[schema(example = "id")]
    language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<HeaderJson>,
    #[schema(example = "Hi {{1}}, your order {{2}} is on its way.")]
    body: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    footer: String,
    #[serde(default)]
    buttons: Vec<ButtonJson>,
}

impl From<VariantJson> for TemplateVariant {
    fn from(v: VariantJson) -> Self {
        TemplateVariant {
            language: v.language,
            header: v.header.map(|h| TemplateHeader {
                format: h.format,
                text: h.text,
                media_url: h.media_url,
            }),
            body: v.body,
            footer: v.footer,
            buttons: v
                .buttons
                .into_iter()
                .map(|b| TemplateButton {
                    r#type: b.kind,
                    text: b.text,
                    url: b.url,
                    phone_number: b.phone_number,
                })
                .collect(),
        }
    }
}

impl From<TemplateVariant> for VariantJson {
    fn from(v: TemplateVariant) -> Self {
        VariantJson {
            language: v.language,
            header: v.header.map(|h| HeaderJson {
                format: h.format,
                text: h.text,
                media_url: h.media_url,
            }),
            body: v.body,
            footer: v.footer,
            buttons: v
                .buttons
                .into_iter()
                .map(|b| ButtonJson {
                    kind: b.r#type,
                    text: b.text,
                    url: b.url,
                    phone_number: b.phone_number,
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateData {
    template_id: String,
    name: String,
    category: String,
    /// Always APPROVED: there is no review on a linked device.
    status: String,
    variants: Vec<VariantJson>,
    created_at: String,
    updated_at: String,
}

impl From<Option<Template>> for TemplateData {
    fn from(t: Option<Template>) -> Self {
        let t = t.unwrap_or_default();
        TemplateData {
            template_id: t.template_id,
            name: t.name,
            category: t.category,
            status: t.status,
            variants: t.variants.into_iter().map(Into::into).collect(),
            created_at: rfc3339_of(t.created_at),
            updated_at: rfc3339_of(t.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct NewTemplate {
    #[schema(example = "order_shipped")]
    name: String,
    #[schema(example = "UTILITY")]
    category: String,
    variants: Vec<VariantJson>,
}

/// Create a template (APPROVED at once).
#[utoipa::path(
    post, path = "/api/v1/templates", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CreateTemplate"))),
    request_body = NewTemplate,
    responses(
        (status = 201, body = inline(Success<TemplateData>)),
        (status = 400, description = "INVALID_TEMPLATE", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "TEMPLATE_NAME_TAKEN", body = ErrorBody),
    )
)]
pub async fn create(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Json(req): Json<NewTemplate>,
) -> ApiResult {
    let msg = CreateTemplateRequest {
        name: req.name,
        category: req.category,
        variants: req.variants.into_iter().map(Into::into).collect(),
    };
    let r = call::answer(api(&gw).create_template(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        TemplateData::from(r.template),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// At most 100; default 20.
    page_size: Option<i32>,
    /// From the previous page's `nextPageToken`.
    page_token: Option<String>,
    /// Only templates whose name contains this.
    query: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateList {
    templates: Vec<TemplateData>,
    /// Null on the last page.
    next_page_token: Option<String>,
    total: i64,
}

/// The project's templates, oldest first.
#[utoipa::path(
    get, path = "/api/v1/templates", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListTemplates"))),
    params(ListParams),
    responses((status = 200, body = inline(Success<TemplateList>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub async fn list(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Query(q): Query<ListParams>,
) -> ApiResult {
    let msg = ListTemplatesRequest {
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
        query: q.query.unwrap_or_default(),
    };
    let r = call::answer(api(&gw).list_templates(call::request(Some(p), msg)).await)?;
    let data = TemplateList {
        templates: r.templates.into_iter().map(|t| Some(t).into()).collect(),
        next_page_token: non_empty(r.next_page_token),
        total: r.total,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// One template.
#[utoipa::path(
    get, path = "/api/v1/templates/{id}", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/GetTemplate"))),
    params(("id" = String, Path, description = "template id")),
    responses(
        (status = 200, body = inline(Success<TemplateData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "TEMPLATE_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn get(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = GetTemplateRequest { template_id: id };
    let r = call::answer(api(&gw).get_template(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        TemplateData::from(r.template),
    ))
}

/// Replace a template's name, category and variants.
#[utoipa::path(
    put, path = "/api/v1/templates/{id}", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/UpdateTemplate"))),
    params(("id" = String, Path, description = "template id")),
    request_body = NewTemplate,
    responses(
        (status = 200, body = inline(Success<TemplateData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub async fn update(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    Json(req): Json<NewTemplate>,
) -> ApiResult {
    let msg = UpdateTemplateRequest {
        template_id: id,
        name: req.name,
        category: req.category,
        variants: req.variants.into_iter().map(Into::into).collect(),
    };
    let r = call::answer(api(&gw).update_template(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        TemplateData::from(r.template),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateDeleted {
    template_id: String,
    deleted: bool,
}

/// Delete a template.
#[utoipa::path(
    delete, path = "/api/v1/templates/{id}", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/DeleteTemplate"))),
    params(("id" = String, Path, description = "template id")),
    responses(
        (status = 200, body = inline(Success<TemplateDeleted>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn remove(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = DeleteTemplateRequest {
        template_id: id.clone(),
    };
    call::answer(api(&gw).delete_template(call::request(Some(p), msg)).await)?;
    let data = TemplateDeleted {
        template_id: id,
        deleted: true,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderParams {
    /// The variant's language (else the same primary language, else the first variant).
    #[serde(default)]
    language: String,
    /// Body values, `{{1}}` first: exactly as many as the body has variables.
    #[serde(default)]
    body: Vec<String>,
    /// TEXT header values.
    #[serde(default)]
    header: Vec<String>,
    /// By button index ("0", "1", …): a URL suffix or an OTP code.
    #[serde(default)]
    buttons: HashMap<u32, String>,
    /// A media header's URL and file name.
    #[serde(default)]
    media_url: String,
    #[serde(default)]
    filename: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderedData {
    language: String,
    /// The message text, or the media's caption.
    text: String,
    /// IMAGE, VIDEO or DOCUMENT when the message is that media.
    media_format: Option<String>,
    media_url: Option<String>,
    filename: Option<String>,
}

/// The exact message a send of the template with these values would carry.
#[utoipa::path(
    post, path = "/api/v1/templates/{id}/render", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/RenderTemplate"))),
    params(("id" = String, Path, description = "template id")),
    request_body(content = Option<RenderParams>),
    responses(
        (status = 200, body = inline(Success<RenderedData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "TEMPLATE_VARIABLES_MISMATCH", body = ErrorBody),
    )
)]
pub async fn render(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RenderParams>,
) -> ApiResult {
    let msg = RenderTemplateRequest {
        template_id: id,
        language: req.language,
        parameters: Some(TemplateParameters {
            body: req.body,
            header: req.header,
            buttons: req.buttons.into_iter().collect(),
            media_url: req.media_url,
            filename: req.filename,
        }),
    };
    let r = call::answer(api(&gw).render_template(call::request(Some(p), msg)).await)?;
    let data = RenderedData {
        language: r.language,
        text: r.text,
        media_format: non_empty(r.media_format),
        media_url: non_empty(r.media_url),
        filename: non_empty(r.filename),
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}
