//! `GET /api/v1/media/{id}`: the media files events reference, transcoded onto
//! `wagate.v1.MessagingService/DownloadMedia` and answered as the file itself.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{SakManager, secured};
use super::call;
use super::envelope::{ApiResult, ErrorBody};
use super::extract::Path;
use crate::domain::Gateway;
use crate::proto::v1::messaging_service_server::MessagingService;
use crate::proto::v1::{DownloadMediaRequest, DownloadMediaResponse};
use crate::transport::grpc::messaging::MessagingApi;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new().routes(secured::<SakManager, _>(routes!(media)))
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
