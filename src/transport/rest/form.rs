//! multipart/form-data bodies, read from bytes already in memory (they were signed or
//! size-checked whole).

use axum::body::Bytes;

use crate::transport::error::Refusal;

pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Bytes,
}

pub async fn parse(content_type: &str, body: Bytes) -> Result<Vec<Part>, Refusal> {
    let bad =
        |e: multer::Error| Refusal::InvalidParameter(format!("malformed multipart body: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let data = field.bytes().await.map_err(bad)?;
        parts.push(Part {
            name,
            filename,
            data,
        });
    }
    Ok(parts)
}

impl Part {
    pub fn text(&self) -> Result<String, Refusal> {
        String::from_utf8(self.data.to_vec()).map_err(|_| {
            Refusal::InvalidParameter(format!("field {} is not UTF-8 text", self.name))
        })
    }
}
