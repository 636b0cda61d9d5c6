//! A CSV upload as a multipart form (`name`, `source_type`, `file`), streamed: the file part
//! goes to disk as it arrives ([`spool`]) and the form's small text fields are read in any
//! order around it, so no surface holds the file in memory.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, header};
use futures::StreamExt;

use super::auth::header_str;
use crate::domain::Gateway;
use crate::domain::broadcasts::contacts::{MAX_UPLOAD_BYTES, Spooled, spool};
use crate::error::{Error, Failure};
use crate::transport::error::Refusal;
use crate::transport::limits::body_read_error;

/// Longest text field of the form.
const MAX_TEXT_FIELD: u64 = 4096;

/// A refusal of the transport or of the service layer, as the surface answers it.
pub enum UploadError {
    Transport(Refusal),
    Domain(Error),
}

impl UploadError {
    pub fn failure(&self) -> &dyn Failure {
        match self {
            UploadError::Transport(r) => r,
            UploadError::Domain(e) => e,
        }
    }
}

impl From<Refusal> for UploadError {
    fn from(r: Refusal) -> Self {
        UploadError::Transport(r)
    }
}

impl From<Error> for UploadError {
    fn from(e: Error) -> Self {
        UploadError::Domain(e)
    }
}

pub struct CsvForm {
    pub name: String,
    pub source_type: String,
    pub file: Spooled,
}

fn malformed(e: multer::Error) -> UploadError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Error::MediaTooLarge(MAX_UPLOAD_BYTES).into()
        }
        e => Refusal::InvalidParameter(format!("malformed multipart body: {e}")).into(),
    }
}

/// Reads the form, the `file` part straight to disk.
pub async fn csv_form(
    gw: &Gateway,
    headers: &HeaderMap,
    body: Body,
) -> Result<CsvForm, UploadError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(Refusal::UnsupportedContentType.into());
    }
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    // A body that fails to arrive (too slow, over the budget) is answered as such.
    let body_error: Arc<Mutex<Option<Refusal>>> = Arc::default();
    let seen = body_error.clone();
    let gw2 = gw.clone();
    let stream = body.into_data_stream().map(move |r| {
        r.map_err(|e| {
            let refusal = body_read_error(&gw2, &e);
            let message = refusal.to_string();
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
            std::io::Error::other(message)
        })
    });
    let limits = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(MAX_UPLOAD_BYTES as u64 + 64 * 1024)
            .per_field(MAX_TEXT_FIELD)
            .for_field("file", MAX_UPLOAD_BYTES as u64),
    );
    let mut form = multer::Multipart::with_constraints(stream, boundary, limits);
    let (mut name, mut source_type, mut file) = (None, String::new(), None);
    let taken = |e: Error| -> UploadError {
        match body_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(r) => r.into(),
            None => e.into(),
        }
    };
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(
                    match body_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        Some(r) => r.into(),
                        None => malformed(e),
                    },
                );
            }
        };
        match field.name().unwrap_or("") {
            "file" if file.is_none() => {
                let chunks = field
                    .map(|r| {
                        r.map_err(|e| match e {
                            multer::Error::StreamSizeExceeded { .. }
                            | multer::Error::FieldSizeExceeded { .. } => {
                                Error::MediaTooLarge(MAX_UPLOAD_BYTES)
                            }
                            e => Error::InvalidRequest(format!("malformed multipart body: {e}")),
                        })
                    })
                    .boxed();
                file = Some(spool(chunks).await.map_err(taken)?);
            }
            "name" => name = Some(field.text().await.map_err(malformed)?),
            "source_type" => source_type = field.text().await.map_err(malformed)?,
            // Other fields (and a second file) are read past, never held.
            _ => {
                let mut field = field;
                while field.chunk().await.map_err(malformed)?.is_some() {}
            }
        }
    }
    let file = file.ok_or_else(|| Error::InvalidRequest("the form has no file field".into()))?;
    Ok(CsvForm {
        name: name.unwrap_or_default(),
        source_type,
        file,
    })
}
