//! The native broadcast API under `/api/v1` in the SAK style (`{success, data}`, camelCase):
//! templates and the render preview, contact lists (CSV upload, streamed), suppressions;
//! transcoded onto `wagate.v1.BroadcastsService`. Same
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
use super::envelope::ApiError;
use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::{Json, OptionalJson, Path, Query};
use super::upload::{UploadError, csv_form};
use super::{rfc3339_of, rfc3339_opt};
use crate::domain::Gateway;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::proto::v1::{
    AddSuppressionRequest, ContactList, CreateTemplateRequest, DeleteTemplateRequest,
    GetContactListRequest, GetTemplateRequest, ListContactListsRequest, ListSuppressionsRequest,
    ListTemplatesRequest, RemoveSuppressionRequest, RenderTemplateRequest, Suppression, Template,
    TemplateButton, TemplateHeader, TemplateParameters, TemplateVariant, UpdateTemplateRequest,
};
use crate::transport::grpc::broadcasts::BroadcastsApi;
use crate::transport::grpc::convert::non_empty;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SakManager, _>(routes!(create, list)))
        .routes(secured::<SakManager, _>(routes!(get, update, remove)))
        .routes(secured::<SakManager, _>(routes!(render)))
        .routes(secured::<SakManager, _>(routes!(upload_list, lists)))
        .routes(secured::<SakManager, _>(routes!(get_list)))
        .routes(secured::<SakManager, _>(routes!(suppressions, suppress)))
        .routes(secured::<SakManager, _>(routes!(unsuppress)))
        .routes(secured::<SakManager, _>(routes!(
            create_broadcast,
            list_broadcasts
        )))
        .routes(secured::<SakManager, _>(routes!(get_broadcast)))
        .routes(secured::<SakManager, _>(routes!(broadcast_recipients)))
        .routes(secured::<SakManager, _>(routes!(pause_broadcast)))
        .routes(secured::<SakManager, _>(routes!(resume_broadcast)))
        .routes(secured::<SakManager, _>(routes!(cancel_broadcast)))
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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectionData {
    /// The row of the file (the header is row 1).
    row: i64,
    /// The number as given.
    phone_number: String,
    reason: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactListData {
    contact_list_id: String,
    name: String,
    source_type: String,
    /// processing, success or failed.
    progress: String,
    /// Data rows read so far.
    rows_total: i64,
    /// Contacts (one per number).
    accepted: i64,
    /// Rows refused (each with its reason; the first 100 in `rejections`).
    rejected: i64,
    /// Rows merged into an earlier row with the same number (the later values win).
    duplicates: i64,
    /// The variable columns.
    variables: Vec<String>,
    error_message: Option<String>,
    rejections: Vec<RejectionData>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

impl From<ContactList> for ContactListData {
    fn from(l: ContactList) -> Self {
        ContactListData {
            contact_list_id: l.contact_list_id,
            name: l.name,
            source_type: l.source_type,
            progress: l.progress,
            rows_total: l.rows_total,
            accepted: l.accepted,
            rejected: l.rejected,
            duplicates: l.duplicates,
            variables: l.variables,
            error_message: non_empty(l.error_message),
            rejections: l
                .rejections
                .into_iter()
                .map(|r| RejectionData {
                    row: r.row,
                    phone_number: r.phone_number,
                    reason: r.reason,
                })
                .collect(),
            created_at: rfc3339_of(l.created_at),
            updated_at: rfc3339_of(l.updated_at),
            finished_at: rfc3339_opt(l.finished_at),
        }
    }
}

/// The upload form.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the form; the handler streams its parts
pub struct ContactListForm {
    name: String,
    /// "spreadsheet" by default.
    source_type: Option<String>,
    /// CSV with a header row: `phone_number`, `full_name`, any other column a variable; at
    /// most 64 MiB and 200,000 rows.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::Transport(r) => r.into(),
        UploadError::Domain(e) => e.into(),
    }
}

/// Upload a contact list (CSV, streamed to disk); it is imported in the background.
#[utoipa::path(
    post, path = "/api/v1/contact-lists", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ImportContactList"))),
    request_body(content = ContactListForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "the list, `processing`", body = inline(Success<ContactListData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
    )
)]
pub async fn upload_list(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    req: axum::extract::Request,
) -> ApiResult {
    let (parts, body) = req.into_parts();
    let form = csv_form(&gw, &parts.headers, body)
        .await
        .map_err(upload_error)?;
    let list = api(&gw)
        .import_contact_list_from(&p, &form.name, &form.source_type, form.file)
        .await?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        ContactListData::from(list),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct PageParams {
    /// At most 100 (suppressions: 1000).
    page_size: Option<i32>,
    /// From the previous page's `nextPageToken`.
    page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactListPage {
    contact_lists: Vec<ContactListData>,
    next_page_token: Option<String>,
    total: i64,
}

/// The project's contact lists, oldest first.
#[utoipa::path(
    get, path = "/api/v1/contact-lists", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListContactLists"))),
    params(PageParams),
    responses((status = 200, body = inline(Success<ContactListPage>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub async fn lists(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Query(q): Query<PageParams>,
) -> ApiResult {
    let msg = ListContactListsRequest {
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
    };
    let r = call::answer(
        api(&gw)
            .list_contact_lists(call::request(Some(p), msg))
            .await,
    )?;
    let data = ContactListPage {
        contact_lists: r.contact_lists.into_iter().map(Into::into).collect(),
        next_page_token: non_empty(r.next_page_token),
        total: r.total,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// One contact list: its progress, counts and the first refused rows.
#[utoipa::path(
    get, path = "/api/v1/contact-lists/{id}", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/GetContactList"))),
    params(("id" = String, Path, description = "contact list id")),
    responses(
        (status = 200, body = inline(Success<ContactListData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "CONTACT_LIST_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn get_list(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = GetContactListRequest {
        contact_list_id: id,
    };
    let r = call::answer(api(&gw).get_contact_list(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        ContactListData::from(r.contact_list.unwrap_or_default()),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionData {
    phone_number: String,
    /// STOP_KEYWORD or MANUAL.
    reason: String,
    /// The keyword, or the note given.
    detail: Option<String>,
    created_at: String,
}

impl From<Suppression> for SuppressionData {
    fn from(s: Suppression) -> Self {
        SuppressionData {
            phone_number: s.phone_number,
            reason: s.reason,
            detail: non_empty(s.detail),
            created_at: rfc3339_of(s.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionPage {
    suppressions: Vec<SuppressionData>,
    next_page_token: Option<String>,
    total: i64,
}

/// The project's suppressed numbers, by number.
#[utoipa::path(
    get, path = "/api/v1/suppressions", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListSuppressions"))),
    params(PageParams),
    responses((status = 200, body = inline(Success<SuppressionPage>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub async fn suppressions(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Query(q): Query<PageParams>,
) -> ApiResult {
    let msg = ListSuppressionsRequest {
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
    };
    let r = call::answer(
        api(&gw)
            .list_suppressions(call::request(Some(p), msg))
            .await,
    )?;
    let data = SuppressionPage {
        suppressions: r.suppressions.into_iter().map(Into::into).collect(),
        next_page_token: non_empty(r.next_page_token),
        total: r.total,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewSuppression {
    #[schema(example = "6281234567890")]
    phone_number: String,
    note: Option<String>,
}

/// Suppress a number: campaigns skip it.
#[utoipa::path(
    post, path = "/api/v1/suppressions", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/AddSuppression"))),
    request_body = NewSuppression,
    responses(
        (status = 201, body = inline(Success<SuppressionData>)),
        (status = 400, description = "INVALID_PHONE_NUMBER", body = ErrorBody), (status = 401, body = ErrorBody),
    )
)]
pub async fn suppress(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Json(req): Json<NewSuppression>,
) -> ApiResult {
    let msg = AddSuppressionRequest {
        phone_number: req.phone_number,
        note: req.note.unwrap_or_default(),
    };
    let r = call::answer(api(&gw).add_suppression(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        SuppressionData::from(r.suppression.unwrap_or_default()),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unsuppressed {
    phone_number: String,
    removed: bool,
}

/// Remove a number from the suppression list.
#[utoipa::path(
    delete, path = "/api/v1/suppressions/{phone}", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/RemoveSuppression"))),
    params(("phone" = String, Path, description = "the number")),
    responses(
        (status = 200, body = inline(Success<Unsuppressed>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "SUPPRESSION_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn unsuppress(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(phone): Path<String>,
) -> ApiResult {
    let msg = RemoveSuppressionRequest {
        phone_number: phone.clone(),
    };
    call::answer(
        api(&gw)
            .remove_suppression(call::request(Some(p), msg))
            .await,
    )?;
    let data = Unsuppressed {
        phone_number: phone,
        removed: true,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastParams {
    /// Direct: the body values, `{{1}}` first. Contact list: the column of each (or
    /// `full_name`, `phone_number`).
    #[serde(default)]
    body: Vec<String>,
    #[serde(default)]
    header: Vec<String>,
    /// By button index: a URL suffix or an OTP code (a column for a list).
    #[serde(default)]
    buttons: HashMap<u32, String>,
    #[serde(default)]
    media_url: String,
    #[serde(default)]
    filename: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewBroadcast {
    #[serde(default)]
    name: String,
    template_id: String,
    /// The template variant's language.
    #[serde(default)]
    language: String,
    /// One or several sessions; recipient n goes through session n mod count.
    session_ids: Vec<String>,
    /// Direct: the number and its name.
    to_number: Option<String>,
    to_name: Option<String>,
    /// Or a contact list that imported successfully.
    contact_list_id: Option<String>,
    #[serde(default)]
    parameters: BroadcastParams,
    /// RFC 3339 with its offset (`2026-12-05T09:00:00+07:00`); absent or past: now.
    send_at: Option<String>,
    /// This campaign's pacing (else the project's send policy).
    pacing: Option<PacingJson>,
    /// Check each number on WhatsApp first; those not on it fail with `NOT_ON_WHATSAPP`.
    #[serde(default)]
    skip_unregistered: bool,
}

#[derive(Deserialize, Serialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PacingJson {
    /// The random gap between two messages of a session, from this…
    min_delay_ms: Option<i64>,
    /// …to this.
    max_delay_ms: Option<i64>,
    /// Paced messages per session and local day at most (0: no cap).
    daily_cap: Option<i64>,
}

/// An RFC 3339 time with its offset, as a proto timestamp.
pub(crate) fn parse_send_at(s: Option<&str>) -> Result<Option<prost_types::Timestamp>, ApiError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| {
        crate::error::Error::InvalidRequest(
            "send_at must be an RFC 3339 time with its offset, e.g. 2026-12-05T09:00:00+07:00"
                .into(),
        )
    })?;
    Ok(Some(crate::transport::grpc::convert::timestamp(
        t.timestamp_millis(),
    )))
}

#[derive(Serialize, ToSchema)]
pub struct CountsData {
    created: i64,
    pending: i64,
    sent: i64,
    delivered: i64,
    read: i64,
    failed: i64,
    cancelled: i64,
    /// Of those sent, how many wrote back within the reply window.
    replied: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastData {
    broadcast_id: String,
    name: String,
    template_id: String,
    language: String,
    /// direct or contact_list.
    kind: String,
    contact_list_id: Option<String>,
    session_ids: Vec<String>,
    /// scheduled, running, paused, completed, cancelled.
    state: String,
    /// immediately or specific.
    execute_type: String,
    send_at: String,
    recipients_total: i64,
    counts: CountsData,
    pacing: PacingJson,
    skip_unregistered: bool,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// Why it is not sending right now (null when it is): `scheduled`, `paused by user`,
    /// `paused by health: …`, a pacing gap or daily cap, the rate limit, an unhealthy session.
    waiting_reason: Option<String>,
    /// Estimated finish (RFC 3339), null when paused, finished or no session is healthy.
    eta: Option<String>,
}

impl From<crate::proto::v1::Broadcast> for BroadcastData {
    fn from(b: crate::proto::v1::Broadcast) -> Self {
        let c = b.counts.unwrap_or_default();
        BroadcastData {
            broadcast_id: b.broadcast_id,
            name: b.name,
            template_id: b.template_id,
            language: b.language,
            kind: b.kind,
            contact_list_id: non_empty(b.contact_list_id),
            session_ids: b.session_ids,
            state: b.state,
            execute_type: b.execute_type,
            send_at: rfc3339_of(b.send_at),
            recipients_total: b.recipients_total,
            counts: CountsData {
                created: c.created,
                pending: c.pending,
                sent: c.sent,
                delivered: c.delivered,
                read: c.read,
                failed: c.failed,
                cancelled: c.cancelled,
                replied: c.replied,
            },
            pacing: PacingJson {
                min_delay_ms: Some(b.pacing_min_ms),
                max_delay_ms: Some(b.pacing_max_ms),
                daily_cap: Some(b.daily_cap),
            },
            skip_unregistered: b.skip_unregistered,
            created_at: rfc3339_of(b.created_at),
            started_at: rfc3339_opt(b.started_at),
            finished_at: rfc3339_opt(b.finished_at),
            waiting_reason: non_empty(b.waiting_reason),
            eta: rfc3339_opt(b.eta),
        }
    }
}

/// Start a broadcast: a template to one number or to a contact list, now or at `sendAt`.
#[utoipa::path(
    post, path = "/api/v1/broadcasts", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CreateBroadcast"))),
    request_body = NewBroadcast,
    responses(
        (status = 201, body = inline(Success<BroadcastData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "TEMPLATE_VARIABLES_MISMATCH", body = ErrorBody),
    )
)]
pub async fn create_broadcast(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Json(req): Json<NewBroadcast>,
) -> ApiResult {
    let msg = crate::proto::v1::CreateBroadcastRequest {
        name: req.name,
        template_id: req.template_id,
        language: req.language,
        session_ids: req.session_ids,
        to_number: req.to_number.unwrap_or_default(),
        to_name: req.to_name.unwrap_or_default(),
        contact_list_id: req.contact_list_id.unwrap_or_default(),
        parameters: Some(crate::proto::v1::BroadcastParameters {
            body: req.parameters.body,
            header: req.parameters.header,
            buttons: req.parameters.buttons.into_iter().collect(),
            media_url: req.parameters.media_url,
            filename: req.parameters.filename,
            labels: Vec::new(),
        }),
        send_at: parse_send_at(req.send_at.as_deref())?,
        pacing_min_ms: req.pacing.as_ref().and_then(|p| p.min_delay_ms),
        pacing_max_ms: req.pacing.as_ref().and_then(|p| p.max_delay_ms),
        daily_cap: req.pacing.as_ref().and_then(|p| p.daily_cap),
        skip_unregistered: req.skip_unregistered,
    };
    let r = call::answer(api(&gw).create_broadcast(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::CREATED,
        gw.node_id(),
        BroadcastData::from(r.broadcast.unwrap_or_default()),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastPage {
    broadcasts: Vec<BroadcastData>,
    next_page_token: Option<String>,
    total: i64,
}

/// The project's broadcasts, newest first.
#[utoipa::path(
    get, path = "/api/v1/broadcasts", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListBroadcasts"))),
    params(PageParams),
    responses((status = 200, body = inline(Success<BroadcastPage>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub async fn list_broadcasts(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Query(q): Query<PageParams>,
) -> ApiResult {
    let msg = crate::proto::v1::ListBroadcastsRequest {
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
    };
    let r = call::answer(api(&gw).list_broadcasts(call::request(Some(p), msg)).await)?;
    let data = BroadcastPage {
        broadcasts: r.broadcasts.into_iter().map(Into::into).collect(),
        next_page_token: non_empty(r.next_page_token),
        total: r.total,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// One broadcast with its progress.
#[utoipa::path(
    get, path = "/api/v1/broadcasts/{id}", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/GetBroadcast"))),
    params(("id" = String, Path, description = "broadcast id")),
    responses(
        (status = 200, body = inline(Success<BroadcastData>)),
        (status = 401, body = ErrorBody), (status = 404, description = "BROADCAST_NOT_FOUND", body = ErrorBody),
    )
)]
pub async fn get_broadcast(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = crate::proto::v1::GetBroadcastRequest { broadcast_id: id };
    let r = call::answer(api(&gw).get_broadcast(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        BroadcastData::from(r.broadcast.unwrap_or_default()),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecipientData {
    seq: i64,
    phone_number: String,
    full_name: String,
    /// created, pending, sent, delivered, read, replied, failed, cancelled.
    status: String,
    session_id: String,
    message_id: Option<String>,
    wa_message_id: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    /// Why it waits, while held.
    held_reason: Option<String>,
    created_at: String,
    sent_at: Option<String>,
    delivered_at: Option<String>,
    read_at: Option<String>,
    failed_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecipientPage {
    recipients: Vec<RecipientData>,
    next_page_token: Option<String>,
    total: i64,
}

/// A broadcast's per-recipient log.
#[utoipa::path(
    get, path = "/api/v1/broadcasts/{id}/recipients", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListBroadcastRecipients"))),
    params(("id" = String, Path, description = "broadcast id"), PageParams),
    responses(
        (status = 200, body = inline(Success<RecipientPage>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn broadcast_recipients(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
    Query(q): Query<PageParams>,
) -> ApiResult {
    let msg = crate::proto::v1::ListBroadcastRecipientsRequest {
        broadcast_id: id,
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
    };
    let r = call::answer(
        api(&gw)
            .list_broadcast_recipients(call::request(Some(p), msg))
            .await,
    )?;
    let data = RecipientPage {
        recipients: r
            .recipients
            .into_iter()
            .map(|x| RecipientData {
                seq: x.seq,
                phone_number: x.phone_number,
                full_name: x.full_name,
                status: x.status,
                session_id: x.session_id,
                message_id: non_empty(x.message_id),
                wa_message_id: non_empty(x.wa_message_id),
                error_code: non_empty(x.error_code),
                error_message: non_empty(x.error_message),
                held_reason: non_empty(x.held_reason),
                created_at: rfc3339_of(x.created_at),
                sent_at: rfc3339_opt(x.sent_at),
                delivered_at: rfc3339_opt(x.delivered_at),
                read_at: rfc3339_opt(x.read_at),
                failed_at: rfc3339_opt(x.failed_at),
            })
            .collect(),
        next_page_token: non_empty(r.next_page_token),
        total: r.total,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// Pause a scheduled or running broadcast.
#[utoipa::path(
    post, path = "/api/v1/broadcasts/{id}/pause", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/PauseBroadcast"))),
    params(("id" = String, Path, description = "broadcast id")),
    responses(
        (status = 200, body = inline(Success<BroadcastData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "BROADCAST_STATE_CONFLICT", body = ErrorBody),
    )
)]
pub async fn pause_broadcast(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = crate::proto::v1::PauseBroadcastRequest { broadcast_id: id };
    let r = call::answer(api(&gw).pause_broadcast(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        BroadcastData::from(r.broadcast.unwrap_or_default()),
    ))
}

/// Resume a paused broadcast.
#[utoipa::path(
    post, path = "/api/v1/broadcasts/{id}/resume", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ResumeBroadcast"))),
    params(("id" = String, Path, description = "broadcast id")),
    responses(
        (status = 200, body = inline(Success<BroadcastData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub async fn resume_broadcast(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = crate::proto::v1::ResumeBroadcastRequest { broadcast_id: id };
    let r = call::answer(api(&gw).resume_broadcast(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        BroadcastData::from(r.broadcast.unwrap_or_default()),
    ))
}

/// Cancel a broadcast: recipients not yet handed to the queue are cancelled.
#[utoipa::path(
    post, path = "/api/v1/broadcasts/{id}/cancel", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CancelBroadcast"))),
    params(("id" = String, Path, description = "broadcast id")),
    responses(
        (status = 200, body = inline(Success<BroadcastData>)),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub async fn cancel_broadcast(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = crate::proto::v1::CancelBroadcastRequest { broadcast_id: id };
    let r = call::answer(api(&gw).cancel_broadcast(call::request(Some(p), msg)).await)?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        BroadcastData::from(r.broadcast.unwrap_or_default()),
    ))
}
