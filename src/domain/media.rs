//! Media acceptance: a file's type is judged by its bytes (magic numbers), never only by the
//! name or declared type a client sends; and files uploaded for later use (a broadcast
//! template's header media).

use super::Gateway;
use super::auth::Caller;
use super::text::no_nul;
use crate::error::{Error, Result};
use crate::storage::media::NewMedia;
use crate::storage::now_ms;

/// A stored upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub media_id: String,
    pub mime_type: String,
    pub filename: Option<String>,
    pub size: i64,
}

impl Gateway {
    /// Stores a file of the caller's project for later use (a template header's media): at
    /// most the media size limit, of a format WhatsApp takes as a document (any allowed one).
    /// It is kept for the media retention period, longer while a campaign uses it.
    pub async fn upload_media(
        &self,
        caller: &Caller,
        data: Vec<u8>,
        filename: Option<String>,
    ) -> Result<Uploaded> {
        if let Some(f) = &filename {
            no_nul("file name", f)?;
        }
        let format = validate(
            MessageKind::Document,
            &data,
            self.settings().max_media_bytes,
        )?;
        let filename: Option<String> = filename
            .map(|f| {
                f.trim()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(255)
                    .collect()
            })
            .filter(|f: &String| !f.is_empty());
        let row = NewMedia {
            id: uuid::Uuid::now_v7().to_string(),
            project_id: caller.project.row.id.clone(),
            sha256: crate::crypto::sha256_hex(&data),
            mime_type: format.mime().to_owned(),
            filename: filename.clone(),
            size_bytes: data.len() as i64,
            data,
            created_at: now_ms(),
        };
        let out = Uploaded {
            media_id: row.id.clone(),
            mime_type: row.mime_type.clone(),
            filename,
            size: row.size_bytes,
        };
        self.db()
            .run(move |c| crate::storage::media::insert(c, &row))
            .await?;
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Image,
    Document,
    Video,
    Audio,
}

impl MessageKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(MessageKind::Text),
            "image" => Ok(MessageKind::Image),
            "document" => Ok(MessageKind::Document),
            "video" => Ok(MessageKind::Video),
            "audio" => Ok(MessageKind::Audio),
            _ => Err(Error::InvalidMessageType),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::Document => "document",
            MessageKind::Video => "video",
            MessageKind::Audio => "audio",
        }
    }
}

/// The allowed formats (RK: jpeg, png, webp, pdf, doc, docx, mp4, mp3, ogg).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFormat {
    Jpeg,
    Png,
    Webp,
    Pdf,
    Doc,
    Docx,
    Mp4,
    Mp3,
    Ogg,
}

impl MediaFormat {
    pub fn mime(self) -> &'static str {
        match self {
            MediaFormat::Jpeg => "image/jpeg",
            MediaFormat::Png => "image/png",
            MediaFormat::Webp => "image/webp",
            MediaFormat::Pdf => "application/pdf",
            MediaFormat::Doc => "application/msword",
            MediaFormat::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            MediaFormat::Mp4 => "video/mp4",
            MediaFormat::Mp3 => "audio/mpeg",
            MediaFormat::Ogg => "audio/ogg",
        }
    }

    fn fits(self, kind: MessageKind) -> bool {
        use MediaFormat::*;
        match kind {
            MessageKind::Text => false,
            MessageKind::Image => matches!(self, Jpeg | Png | Webp),
            MessageKind::Video => matches!(self, Mp4),
            MessageKind::Audio => matches!(self, Mp3 | Ogg),
            // WhatsApp sends any file as a document.
            MessageKind::Document => true,
        }
    }
}

/// Detects the format from the file's leading bytes.
pub fn sniff(data: &[u8]) -> Option<MediaFormat> {
    let t = infer::get(data)?;
    Some(match t.mime_type() {
        "image/jpeg" => MediaFormat::Jpeg,
        "image/png" => MediaFormat::Png,
        "image/webp" => MediaFormat::Webp,
        "application/pdf" => MediaFormat::Pdf,
        "application/msword" => MediaFormat::Doc,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
            MediaFormat::Docx
        }
        "video/mp4" => MediaFormat::Mp4,
        "audio/mpeg" => MediaFormat::Mp3,
        "audio/ogg" | "audio/opus" => MediaFormat::Ogg,
        _ => return None,
    })
}

/// Checks size and format against the message type; returns the detected format.
pub fn validate(kind: MessageKind, data: &[u8], max_bytes: usize) -> Result<MediaFormat> {
    if data.len() > max_bytes {
        return Err(Error::MediaTooLarge(max_bytes));
    }
    if data.is_empty() {
        return Err(Error::MediaRequired);
    }
    let format = sniff(data).ok_or_else(|| {
        Error::UnsupportedMediaType(
            "file type not allowed: use jpeg, png, webp, pdf, doc, docx, mp4, mp3 or ogg".into(),
        )
    })?;
    if !format.fits(kind) {
        return Err(Error::UnsupportedMediaType(format!(
            "a {} file cannot be sent as type {}",
            format.mime(),
            kind.as_str()
        )));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judged_by_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(
            validate(MessageKind::Image, png, 100).unwrap(),
            MediaFormat::Png
        );
        let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
        assert!(validate(MessageKind::Image, pdf, 100).is_err());
        assert_eq!(
            validate(MessageKind::Document, pdf, 100).unwrap(),
            MediaFormat::Pdf
        );
        assert!(matches!(
            validate(MessageKind::Image, b"MZ\x90\0 not an image", 100),
            Err(Error::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            validate(MessageKind::Image, png, 4),
            Err(Error::MediaTooLarge(4))
        ));
    }
}
