//! A campaign's header media (IMAGE, VIDEO, DOCUMENT templates): the file is had once per
//! campaign and URL, not once per recipient, and every recipient's message references that
//! one stored file (`media_id`), so 100,000 recipients mean one download and one copy.
//!
//! Where the file comes from:
//! - a file uploaded beforehand (`UploadMedia`, Qontak's `file_uploader`): its URL names it
//!   (`…/api/v1/media/<id>`), and a file of the campaign's project is taken from storage
//!   without an HTTP round trip;
//! - any other `http(s)` URL: fetched through the guarded client webhooks use (no private
//!   addresses unless `WAGATE_WEBHOOK_ALLOW_PRIVATE`, no redirects, bounded time), at most
//!   the media size limit, its type judged by its bytes.
//!
//! One node claims the fetch (a lease in the database) and runs it in the background; the
//! campaign's recipients are held meanwhile (`fetching the header media`), so a slow URL
//! never stalls the dispatcher. A transient failure (timeout, connection, 5xx, 429) is
//! retried after 10 s and 60 s; a permanent one (4xx, a refused address, a file of the wrong
//! type or too large), or the third failure, fails every recipient of the campaign with its
//! code (`MEDIA_FETCH_FAILED`, `UNSUPPORTED_MEDIA_TYPE`, `MEDIA_TOO_LARGE`, `MEDIA_NOT_FOUND`)
//! without asking the URL again.

use std::time::Duration;

use super::model::HeaderFormat;
use super::render::MediaHeader;
use crate::domain::Gateway;
use crate::domain::media::{self as files, MessageKind};
use crate::error::{Error, Result};
use crate::storage::broadcast_media::{self as store, FAILED, FETCHING, READY, RETRY};
use crate::storage::media::NewMedia;
use crate::storage::now_ms;
use crate::values::ProjectId;

/// A fetcher's claim: a node that dies mid-fetch leaves it to another after this.
const FETCH_LEASE_MS: i64 = 120_000;
/// How long one fetch may take (connect, answer and body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at a URL that fails transiently.
const MAX_ATTEMPTS: i32 = 3;
/// The wait before attempt 2 and 3.
const RETRY_AFTER_MS: [i64; 2] = [10_000, 60_000];
/// How often a held recipient looks again while the file is being fetched.
const WAIT_MS: i64 = 1_000;
/// The path of an uploaded file's URL, before its id.
pub const UPLOAD_PATH: &str = "/api/v1/media/";

/// Where a recipient's header media stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMedia {
    /// Stored: the message is this media, of this kind.
    Ready { media_id: String, kind: MessageKind },
    /// Not yet: hold the recipient until then, saying why.
    Wait { until: i64, reason: String },
    /// Never: the recipient fails with this code.
    Failed { code: &'static str, message: String },
}

/// A failed fetch: its code, what to tell the user, and whether another attempt may help.
#[derive(Debug)]
struct FetchError {
    code: &'static str,
    message: String,
    transient: bool,
}

impl FetchError {
    fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        FetchError {
            code,
            message: message.into(),
            transient: false,
        }
    }

    fn transient(message: impl Into<String>) -> Self {
        FetchError {
            code: "MEDIA_FETCH_FAILED",
            message: message.into(),
            transient: true,
        }
    }
}

impl From<Error> for FetchError {
    fn from(e: Error) -> Self {
        FetchError {
            code: e.code(),
            message: e.public_message(),
            transient: e.kind().is_server_side(),
        }
    }
}

/// The codes a header media failure is stored with, back as the static code.
fn known_code(code: Option<&str>) -> &'static str {
    match code {
        Some("UNSUPPORTED_MEDIA_TYPE") => "UNSUPPORTED_MEDIA_TYPE",
        Some("MEDIA_TOO_LARGE") => "MEDIA_TOO_LARGE",
        Some("MEDIA_NOT_FOUND") => "MEDIA_NOT_FOUND",
        Some("MEDIA_REQUIRED") => "MEDIA_REQUIRED",
        _ => "MEDIA_FETCH_FAILED",
    }
}

pub fn kind_of(format: HeaderFormat) -> MessageKind {
    match format {
        HeaderFormat::Image => MessageKind::Image,
        HeaderFormat::Video => MessageKind::Video,
        HeaderFormat::Document | HeaderFormat::Text => MessageKind::Document,
    }
}

/// The id of an uploaded file a URL names (`…/api/v1/media/<uuid>`), if it names one.
pub fn uploaded_id(url: &str) -> Option<String> {
    let path = match reqwest::Url::parse(url) {
        Ok(u) => u.path().to_owned(),
        Err(_) => url.split(['?', '#']).next()?.to_owned(),
    };
    let id = path.strip_prefix(UPLOAD_PATH)?;
    uuid::Uuid::parse_str(id).ok().map(|u| u.to_string())
}

/// The file name a document is sent with: the one the send gives, else the uploaded file's,
/// else the URL's last path segment.
fn document_name(wanted: &str, stored: Option<&str>, url: &str) -> Option<String> {
    let from_url = || {
        let u = reqwest::Url::parse(url).ok()?;
        let last = u.path_segments()?.next_back()?.to_owned();
        let name = percent_encoding::percent_decode_str(&last)
            .decode_utf8_lossy()
            .trim()
            .to_owned();
        (!name.is_empty()).then_some(name)
    };
    let name = match wanted.trim() {
        "" => stored.map(str::to_owned).or_else(from_url)?,
        w => w.to_owned(),
    };
    Some(name.chars().filter(|c| !c.is_control()).take(255).collect())
}

impl Gateway {
    /// The header media of campaign `broadcast_id` (of `project`) for one recipient: ready,
    /// to wait for (the fetch is claimed and started here when it is due), or failed.
    pub(super) async fn header_media(
        &self,
        broadcast_id: &str,
        project: &ProjectId,
        header: &MediaHeader,
    ) -> Result<HeaderMedia> {
        let kind = kind_of(header.format);
        let now = now_ms();
        let (bid, url) = (broadcast_id.to_owned(), header.url.clone());
        let row = self.db().run(move |c| store::get(c, &bid, &url)).await?;
        let fetching = HeaderMedia::Wait {
            until: now + WAIT_MS,
            reason: "fetching the template's header media".into(),
        };
        match row {
            Some(r) if r.state == READY => {
                return Ok(match r.media_id {
                    Some(media_id) => HeaderMedia::Ready { media_id, kind },
                    None => HeaderMedia::Failed {
                        code: "MEDIA_NOT_FOUND",
                        message: "the header media is gone".into(),
                    },
                });
            }
            Some(r) if r.state == FAILED => {
                return Ok(HeaderMedia::Failed {
                    code: known_code(r.error_code.as_deref()),
                    message: r.error_message.unwrap_or_default(),
                });
            }
            Some(r) if r.state == FETCHING && r.retry_at > now => return Ok(fetching),
            Some(r) if r.state == RETRY && r.retry_at > now => {
                return Ok(HeaderMedia::Wait {
                    until: r.retry_at,
                    reason: format!(
                        "the header media fetch failed ({}); attempt {} of {MAX_ATTEMPTS} at {}",
                        r.error_message.unwrap_or_default(),
                        r.attempts + 1,
                        crate::domain::messaging::rfc3339(r.retry_at)
                    ),
                });
            }
            _ => {}
        }
        let (bid, url, node) = (
            broadcast_id.to_owned(),
            header.url.clone(),
            self.node_id().to_owned(),
        );
        let claimed = self
            .db()
            .run(move |c| store::claim(c, &bid, &url, &node, now, now + FETCH_LEASE_MS))
            .await?;
        if let Some(attempt) = claimed {
            let gw = self.clone();
            let (bid, project, header) = (broadcast_id.to_owned(), project.clone(), header.clone());
            tokio::spawn(async move {
                gw.fetch_header_media(&bid, &project, &header, attempt)
                    .await;
            });
        }
        Ok(fetching)
    }

    /// Runs one claimed fetch and stores its outcome, then wakes the dispatcher.
    async fn fetch_header_media(
        &self,
        broadcast_id: &str,
        project: &ProjectId,
        header: &MediaHeader,
        attempt: i32,
    ) {
        let outcome = match tokio::time::timeout(
            FETCH_TIMEOUT + Duration::from_secs(5),
            self.header_file(project, header),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::transient(
                "the media URL did not answer in time",
            )),
        };
        let now = now_ms();
        let (bid, url, node) = (
            broadcast_id.to_owned(),
            header.url.clone(),
            self.node_id().to_owned(),
        );
        let stored = match outcome {
            Ok((media_id, file)) => self
                .db()
                .run(move |c| store::ready(c, &bid, &url, &node, file.as_ref(), &media_id, now))
                .await
                .map(drop),
            Err(e) => {
                let retry_at = (e.transient && attempt < MAX_ATTEMPTS).then(|| {
                    now + RETRY_AFTER_MS[(attempt as usize - 1).min(RETRY_AFTER_MS.len() - 1)]
                });
                tracing::info!(
                    broadcast = %broadcast_id, attempt, code = e.code, error = %e.message,
                    retry = retry_at.is_some(), "header media fetch failed"
                );
                self.db()
                    .run(move |c| {
                        store::fetch_failed(
                            c,
                            &bid,
                            &url,
                            &node,
                            (e.code, &e.message),
                            retry_at,
                            now,
                        )
                    })
                    .await
            }
        };
        if let Err(e) = stored {
            // The claim lapses and another round (here or elsewhere) fetches again.
            tracing::warn!(broadcast = %broadcast_id, error = %e, "cannot store the header media outcome");
        }
        self.inner.broadcasts_wake.notify_one();
    }

    /// The header's file: its media id, and the file to store when it is a new one.
    async fn header_file(
        &self,
        project: &ProjectId,
        header: &MediaHeader,
    ) -> std::result::Result<(String, Option<NewMedia>), FetchError> {
        let kind = kind_of(header.format);
        let max = self.settings().max_media_bytes;
        if let Some(id) = uploaded_id(&header.url) {
            let (p, mid) = (project.clone(), id.clone());
            let found = self
                .db()
                .run(move |c| store::project_file(c, &p, &mid))
                .await?;
            if let Some(blob) = found {
                files::validate(kind, &blob.data, max)?;
                let name = match kind {
                    MessageKind::Document => {
                        document_name(&header.filename, blob.filename.as_deref(), &header.url)
                    }
                    _ => None,
                };
                // The upload itself, unless the send names the document differently.
                if name.is_none() || name == blob.filename {
                    return Ok((id, None));
                }
                let file = self.new_media(project, blob.data, blob.mime_type, name);
                return Ok((file.id.clone(), Some(file)));
            }
            // Not a file of this project: the URL is fetched like any other.
        }
        let data = self.download(&header.url, max).await?;
        let format = files::validate(kind, &data, max)?;
        let name = match kind {
            MessageKind::Document => document_name(&header.filename, None, &header.url),
            _ => None,
        };
        let file = self.new_media(project, data, format.mime().to_owned(), name);
        Ok((file.id.clone(), Some(file)))
    }

    fn new_media(
        &self,
        project: &ProjectId,
        data: Vec<u8>,
        mime_type: String,
        filename: Option<String>,
    ) -> NewMedia {
        NewMedia {
            id: uuid::Uuid::now_v7().to_string(),
            project_id: project.clone(),
            sha256: crate::crypto::sha256_hex(&data),
            mime_type,
            filename,
            size_bytes: data.len() as i64,
            data,
            created_at: now_ms(),
        }
    }

    /// GETs `url` through the guarded client, at most `max` bytes.
    async fn download(&self, url: &str, max: usize) -> std::result::Result<Vec<u8>, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| {
            FetchError::permanent("MEDIA_FETCH_FAILED", "the media URL is not a URL")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::permanent(
                "MEDIA_FETCH_FAILED",
                "the media URL must be http or https",
            ));
        }
        let client = crate::webhooks::http::client(&self.settings().webhooks)
            .map_err(|e| FetchError::transient(e.to_string()))?;
        let request = client
            .get(url)
            .map_err(|r| FetchError::permanent("MEDIA_FETCH_FAILED", r.to_string()))?;
        let mut resp = request
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        if !status.is_success() {
            let message = format!("the media URL answered HTTP {}", status.as_u16());
            return Err(match status.as_u16() {
                408 | 429 | 500.. => FetchError::transient(message),
                _ => FetchError::permanent("MEDIA_FETCH_FAILED", message),
            });
        }
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(Error::MediaTooLarge(max).into());
        }
        let mut data = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
            if data.len() + chunk.len() > max {
                return Err(Error::MediaTooLarge(max).into());
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }
}

/// A request that failed before an answer: refused by the address guard (for good), or a
/// network failure (worth another attempt). The URL is never part of the message.
fn request_error(e: reqwest::Error) -> FetchError {
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<crate::webhooks::http::Refused>() {
            return FetchError::permanent("MEDIA_FETCH_FAILED", r.to_string());
        }
        source = s.source();
    }
    let what = if e.is_timeout() {
        "the media URL did not answer in time"
    } else if e.is_connect() {
        "cannot connect to the media URL's host"
    } else {
        "the media download failed"
    };
    FetchError::transient(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_files_are_named_by_their_url() {
        let id = "0190f3a4-7b7e-7d2c-9c1a-3f2b8f0e6a11";
        assert_eq!(
            uploaded_id(&format!("https://gw.example/api/v1/media/{id}")).as_deref(),
            Some(id)
        );
        assert_eq!(
            uploaded_id(&format!("/api/v1/media/{id}")).as_deref(),
            Some(id)
        );
        assert_eq!(uploaded_id("https://gw.example/api/v1/media/nope"), None);
        assert_eq!(uploaded_id("https://cdn.example/x.png"), None);
    }

    #[test]
    fn a_document_is_named_by_the_send_the_upload_or_the_url() {
        let url = "https://cdn.example/files/Price%20list.pdf?sig=1";
        assert_eq!(
            document_name("q4.pdf", Some("a.pdf"), url).unwrap(),
            "q4.pdf"
        );
        assert_eq!(document_name("", Some("a.pdf"), url).unwrap(), "a.pdf");
        assert_eq!(document_name(" ", None, url).unwrap(), "Price list.pdf");
        assert_eq!(document_name("", None, "https://cdn.example/"), None);
    }

    #[test]
    fn stored_codes_come_back_as_codes() {
        assert_eq!(known_code(Some("MEDIA_TOO_LARGE")), "MEDIA_TOO_LARGE");
        assert_eq!(known_code(Some("whatever")), "MEDIA_FETCH_FAILED");
        assert_eq!(known_code(None), "MEDIA_FETCH_FAILED");
    }
}
