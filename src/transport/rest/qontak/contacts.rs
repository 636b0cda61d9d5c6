//! Contact lists in Qontak's shape: `POST /contacts/contact_lists/async` (multipart `name`,
//! `source_type`, `file`; the file streamed to disk), `GET /contacts/contact_lists[/{id}]`.
//! Clients poll `progress` until it is `success` (anything else after `processing` is a
//! failure); `error_messages` lists the refused rows with their reasons.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MAX_GET_BYTES, Mekari, MekariHead, Page, Paging, QPath, QQuery};
use super::{QontakError, QontakErrorBody, QontakResult, ok, page, qontak_time};
use crate::domain::Gateway;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::proto::v1::{ContactList, GetContactListRequest, ListContactListsRequest};
use crate::transport::grpc::broadcasts::BroadcastsApi;
use crate::transport::rest::auth::secured;
use crate::transport::rest::call;
use crate::transport::rest::upload::{UploadError, csv_form};

type SignedGet = Mekari<MAX_GET_BYTES>;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<MekariHead, _>(routes!(upload)))
        .routes(secured::<SignedGet, _>(routes!(list)))
        .routes(secured::<SignedGet, _>(routes!(get)))
}

fn api(gw: &Gateway) -> BroadcastsApi {
    BroadcastsApi::new(gw.clone())
}

#[derive(Serialize, ToSchema)]
pub struct QontakContactList {
    id: String,
    /// The project id.
    organization_id: String,
    #[schema(example = "spreadsheet")]
    source_type: String,
    source_id: Option<String>,
    name: String,
    /// Data rows of the file.
    contacts_count: i64,
    /// Contacts imported (one per number).
    contacts_count_success: i64,
    /// Rows refused.
    contacts_count_failed: i64,
    /// Rows merged into an earlier row with the same number.
    contacts_count_duplicate: i64,
    created_at: Option<String>,
    updated_at: Option<String>,
    /// The variable columns (a bulk broadcast's `parameters.body[].value` names one).
    contact_variables: Vec<String>,
    finished_at: Option<String>,
    /// Why the import failed, then the first refused rows: `row 7: <reason>`.
    error_messages: Vec<String>,
    /// processing, success or failed.
    #[schema(example = "success")]
    progress: String,
}

fn qontak_list(l: ContactList, project_id: &str) -> QontakContactList {
    let mut errors: Vec<String> = Vec::new();
    if !l.error_message.is_empty() {
        errors.push(l.error_message);
    }
    errors.extend(
        l.rejections
            .into_iter()
            .map(|r| format!("row {}: {} ({})", r.row, r.reason, r.phone_number)),
    );
    QontakContactList {
        id: l.contact_list_id,
        organization_id: project_id.to_owned(),
        source_type: l.source_type,
        source_id: None,
        name: l.name,
        contacts_count: l.rows_total,
        contacts_count_success: l.accepted,
        contacts_count_failed: l.rejected,
        contacts_count_duplicate: l.duplicates,
        created_at: qontak_time(l.created_at),
        updated_at: qontak_time(l.updated_at),
        contact_variables: l.variables,
        finished_at: qontak_time(l.finished_at),
        error_messages: errors,
        progress: l.progress,
    }
}

/// The upload form.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the form; the handler streams its parts
pub struct UploadForm {
    name: String,
    /// "spreadsheet".
    source_type: Option<String>,
    /// CSV: `phone_number`, `full_name`, any other column a variable.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload a contact list; it is imported in the background (`progress`).
#[utoipa::path(
    post, path = "/qontak/chat/v1/contacts/contact_lists/async", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ImportContactList"))),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = inline(super::Ok<QontakContactList>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
        (status = 413, body = QontakErrorBody), (status = 415, body = QontakErrorBody),
    )
)]
pub async fn upload(
    State(gw): State<Gateway>,
    MekariHead(p): MekariHead,
    req: axum::extract::Request,
) -> QontakResult {
    let project = p.caller().project.row.id.to_string();
    let (parts, body) = req.into_parts();
    let form = csv_form(&gw, &parts.headers, body)
        .await
        .map_err(|e| match e {
            UploadError::Transport(r) => QontakError::from(r),
            UploadError::Domain(e) => QontakError::from(e),
        })?;
    let list = api(&gw)
        .import_contact_list_from(&p, &form.name, &form.source_type, form.file)
        .await?;
    Ok(ok(StatusCode::CREATED, qontak_list(list, &project)))
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// The page, from 1.
    offset: Option<String>,
    /// Page size (default 10, at most 100).
    limit: Option<i64>,
}

/// The project's contact lists.
#[utoipa::path(
    get, path = "/qontak/chat/v1/contacts/contact_lists", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListContactLists"))),
    params(ListParams),
    responses(
        (status = 200, body = inline(Page<QontakContactList>)),
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
    let msg = ListContactListsRequest {
        page_size: paging.limit as i32,
        page_token: paging.skip().to_string(),
    };
    let r = call::answer(
        api(&gw)
            .list_contact_lists(call::request(Some(signed.principal), msg))
            .await,
    )?;
    let data = r
        .contact_lists
        .into_iter()
        .map(|l| qontak_list(l, &project))
        .collect();
    Ok(page(data, paging, r.total))
}

/// One contact list.
#[utoipa::path(
    get, path = "/qontak/chat/v1/contacts/contact_lists/{id}", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/GetContactList"))),
    params(("id" = String, Path, description = "contact_list_id")),
    responses(
        (status = 200, body = inline(super::Ok<QontakContactList>)),
        (status = 401, body = QontakErrorBody), (status = 404, description = "CONTACT_LIST_NOT_FOUND", body = QontakErrorBody),
    )
)]
pub async fn get(
    State(gw): State<Gateway>,
    QPath(id): QPath<String>,
    signed: SignedGet,
) -> QontakResult {
    let project = signed.principal.caller().project.row.id.to_string();
    let msg = GetContactListRequest {
        contact_list_id: id,
    };
    let r = call::answer(
        api(&gw)
            .get_contact_list(call::request(Some(signed.principal), msg))
            .await,
    )?;
    Ok(ok(
        StatusCode::OK,
        qontak_list(r.contact_list.unwrap_or_default(), &project),
    ))
}
