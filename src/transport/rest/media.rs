//! `GET /api/v1/media/{id}`: the media files events reference, transcoded onto
//! `wagate.v1.MessagingService/DownloadMedia` and answered as the file itself; and
//! `POST /api/v1/media`, a file uploaded for later use (a broadcast template's header media),
//! onto `UploadMedia`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{SakManager, header_str, secured};
use super::call;
use super::envelope::{ApiError, ApiResult, ErrorBody, Success, success};
use super::extract::Path;
use super::upload::UploadError;
use crate::domain::Gateway;
use crate::error::Error;
use crate::proto::v1::messaging_service_server::MessagingService;
use crate::proto::v1::{DownloadMediaRequest, DownloadMediaResponse, UploadMediaRequest};
use crate::transport::error::Refusal;
use crate::transport::grpc::messaging::MessagingApi;
use crate::transport::limits::read_body;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SakManager, _>(routes!(media)))
        .routes(secured::<SakManager, _>(routes!(upload)))
}

/// The uploaded file of a multipart form (its `file` part; other parts are ignored).
pub struct FilePart {
    pub data: Vec<u8>,
    pub filename: String,
}

/// Reads a multipart form with a `file` part, at most a media file plus the form's overhead.
pub async fn file_form(
    gw: &Gateway,
    headers: &HeaderMap,
    body: Body,
) -> Result<FilePart, UploadError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(Refusal::UnsupportedContentType.into());
    }
    let body = read_body(gw, body, super::MAX_BODY_BYTES).await?;
    let part = super::form::parse(content_type, body)
        .await?
        .into_iter()
        .find(|p| p.name == "file")
        .ok_or(Error::MediaRequired)?;
    Ok(FilePart {
        data: part.data.to_vec(),
        filename: part.filename.unwrap_or_default(),
    })
}

/// Where the caller reached the gateway (`X-Forwarded-Proto` or http, then `Host`), the base
/// of an uploaded file's URL.
pub fn base_url(headers: &HeaderMap) -> String {
    let proto = header_str(headers, "x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    match header_str(headers, header::HOST.as_str()).filter(|h| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    }) {
        Some(host) => format!("{proto}://{host}"),
        None => String::new(),
    }
}

/// The upload form.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the form; the handler reads its parts
pub struct MediaUploadForm {
    /// jpeg, png, webp, pdf, doc, docx, mp4, mp3 or ogg; at most 10 MB.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedData {
    media_id: String,
    /// A template header's media URL (a campaign takes the file without fetching it), and
    /// the file's download with the project's credentials.
    url: String,
    /// Judged from the bytes.
    mime_type: String,
    filename: String,
    size: i64,
}

/// Upload a file for later use: a broadcast template's header media (image, video,
/// document). It is kept for the media retention period, and while a campaign uses it.
#[utoipa::path(
    post, path = "/api/v1/media", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/UploadMedia"))),
    request_body(content = MediaUploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = inline(Success<UploadedData>)),
        (status = 400, description = "MEDIA_REQUIRED", body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, description = "MEDIA_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
    )
)]
pub async fn upload(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    req: axum::extract::Request,
) -> ApiResult {
    let (parts, body) = req.into_parts();
    let file = file_form(&gw, &parts.headers, body)
        .await
        .map_err(|e| match e {
            UploadError::Transport(r) => ApiError::from(r),
            UploadError::Domain(e) => ApiError::from(e),
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
    let data = UploadedData {
        media_id: r.media_id,
        url: r.url,
        mime_type: r.mime_type,
        filename: r.filename,
        size: r.size,
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// Inbound media, as referenced by `message.received` (`media.url`).
#[utoipa::path(
    get, path = "/api/v1/media/{id}", tag = "webhooks",
    extensions(("x-grpc-method" = json!("wagate.v1.MessagingService/DownloadMedia"))),
    params(("id" = String, Path, description = "media id from the event")),
    responses(
        (status = 200, description = "the file, with its content type", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, body = ErrorBody), (status = 404, description = "MEDIA_NOT_FOUND", body = ErrorBody),
        (status = 410, description = "MEDIA_EXPIRED: past WAGATE_MEDIA_RETENTION_HOURS", body = ErrorBody),
    )
)]
pub async fn media(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Path(id): Path<String>,
) -> ApiResult {
    let msg = DownloadMediaRequest { media_id: id };
    let mut chunks = call::answer(
        MessagingApi::new(gw.clone())
            .download_media(call::request(Some(p), msg))
            .await,
    )?;
    // The first chunk carries the type and name; the rest of the file streams after it.
    let first = match chunks.next().await {
        Some(first) => first?,
        None => Default::default(),
    };
    let DownloadMediaResponse {
        mime_type,
        filename,
        size,
        data,
    } = first;
    let rest = chunks.map(|c| c.map(|c| c.data));
    let body = Body::from_stream(futures::stream::once(async move { Ok(data) }).chain(rest));
    let mut resp: Response = (
        [
            (header::CONTENT_TYPE, mime_type),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
            // The type is the one judged from the bytes at upload; a browser must not guess.
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response();
    if let Some(v) = Some(filename)
        .filter(|n| !n.is_empty())
        .and_then(|n| content_disposition(&n).parse().ok())
    {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `attachment` with the sender's file name (RFC 6266): an ASCII fallback in which anything
/// that could end the parameter or start another is replaced, and the exact name
/// percent-encoded in `filename*`.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' ' | '-' | '.' | '_' | '(' | ')' | '+' | ',' | '@' | '=' => c,
            c if c.is_ascii_alphanumeric() => c,
            _ => '_',
        })
        .collect();
    let exact = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_cannot_inject_parameters() {
        let v = super::content_disposition("a\"; filename=evil.exe; x=\\.pdf");
        assert_eq!(
            v,
            "attachment; filename=\"a__ filename=evil.exe_ x=_.pdf\"; \
             filename*=UTF-8''a%22%3B%20filename%3Devil%2Eexe%3B%20x%3D%5C%2Epdf"
        );
        assert!(super::content_disposition("ünï.pdf").ends_with("UTF-8''%C3%BCn%C3%AF%2Epdf"));
    }
}
