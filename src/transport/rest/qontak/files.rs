//! `POST /file_uploader` (multipart `file`): a file for a template header's media, answered
//! as `{"status":"success","data":{"url":…}}`, the URL Qontak clients then pass as the
//! header's `url` (a campaign takes the stored file without fetching it). Transcoded onto
//! `wagate.v1.MessagingService/UploadMedia`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MekariHead, QontakError, QontakErrorBody, QontakResult, ok};
use crate::domain::Gateway;
use crate::proto::v1::UploadMediaRequest;
use crate::proto::v1::messaging_service_server::MessagingService;
use crate::transport::grpc::messaging::MessagingApi;
use crate::transport::rest::auth::secured;
use crate::transport::rest::call;
use crate::transport::rest::media::{MediaUploadForm, base_url, file_form};
use crate::transport::rest::upload::UploadError;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new().routes(secured::<MekariHead, _>(routes!(upload)))
}

#[derive(Serialize, ToSchema)]
pub struct QontakUpload {
    /// The file's URL: a template header's `url`.
    url: String,
    /// wagate: the stored file's id, type (judged from its bytes), name and size.
    media_id: String,
    mime_type: String,
    filename: String,
    size: i64,
}

/// Upload a file for a template's header media (at most 10 MB).
#[utoipa::path(
    post, path = "/qontak/chat/v1/file_uploader", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/UploadMedia"))),
    request_body(content = MediaUploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = inline(super::Ok<QontakUpload>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
        (status = 413, body = QontakErrorBody), (status = 415, body = QontakErrorBody),
    )
)]
pub async fn upload(
    State(gw): State<Gateway>,
    MekariHead(p): MekariHead,
    req: axum::extract::Request,
) -> QontakResult {
    let (parts, body) = req.into_parts();
    let file = file_form(&gw, &parts.headers, body)
        .await
        .map_err(|e| match e {
            UploadError::Transport(r) => QontakError::from(r),
            UploadError::Domain(e) => QontakError::from(e),
        })?;
    let msg = UploadMediaRequest {
        data: file.data,
        filename: file.filename,
        base_url: base_url(&parts.headers),
    };
    let r = call::answer(
        MessagingApi::new(gw.clone())
            .upload_media(call::request(Some(p), msg))
            .await,
    )?;
    Ok(ok(
        StatusCode::CREATED,
        QontakUpload {
            url: r.url,
            media_id: r.media_id,
            mime_type: r.mime_type,
            filename: r.filename,
            size: r.size,
        },
    ))
}
