//! What a client of wagate computes: RK and gRPC signatures, the Qontak Authorization
//! header, and multipart bodies whose exact bytes are signed. Used by `wagate sign`, the
//! benchmark and the tests; the README's worked examples are these functions.

use crate::crypto;

/// `hex(HMAC-SHA256(api_secret, api_key ‖ timestamp ‖ raw_body))` — the RK `X-SIGNATURE`.
pub fn rk_signature(api_key: &str, api_secret: &str, timestamp: &str, body: &[u8]) -> String {
    hex::encode(crypto::hmac_sha256(
        api_secret.as_bytes(),
        &[api_key.as_bytes(), timestamp.as_bytes(), body],
    ))
}

/// gRPC `x-signature`: `hex(HMAC-SHA256(api_secret, api_key ‖ timestamp ‖ method_path ‖ message_bytes))`.
pub fn grpc_signature(
    api_key: &str,
    api_secret: &str,
    timestamp: &str,
    method_path: &str,
    message: &[u8],
) -> String {
    hex::encode(crypto::hmac_sha256(
        api_secret.as_bytes(),
        &[
            api_key.as_bytes(),
            timestamp.as_bytes(),
            method_path.as_bytes(),
            message,
        ],
    ))
}

/// The Mekari/Qontak `Authorization` value over `date`, `request-line` and, for a request
/// with a body, `digest`.
pub fn qontak_authorization(
    api_key: &str,
    api_secret: &str,
    date: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> QontakSigned {
    let mut signing = format!("date: {date}\n{method} {path_and_query} HTTP/1.1");
    let mut headers = "date request-line";
    let digest = (!body.is_empty()).then(|| {
        use sha2::Digest;
        format!(
            "SHA-256={}",
            crypto::base64_encode(&sha2::Sha256::digest(body))
        )
    });
    if let Some(d) = &digest {
        signing.push_str(&format!("\ndigest: {d}"));
        headers = "date request-line digest";
    }
    let sig = crypto::base64_encode(&crypto::hmac_sha256(
        api_secret.as_bytes(),
        &[signing.as_bytes()],
    ));
    QontakSigned {
        authorization: format!(
            r#"hmac username="{api_key}", algorithm="hmac-sha256", headers="{headers}", signature="{sig}""#
        ),
        digest,
    }
}

/// The headers of a Mekari/Qontak-signed request: `Authorization`, and `Digest` when the
/// request has a body (a body must be bound by its digest).
pub struct QontakSigned {
    pub authorization: String,
    pub digest: Option<String>,
}

/// An RFC 7231 `Date` header value for now.
pub fn http_date_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

pub fn unix_now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// A multipart/form-data body built in memory, so its exact bytes can be signed.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Self::new()
    }
}

impl Multipart {
    pub fn new() -> Self {
        Multipart {
            boundary: format!("wagate-{}", hex::encode(crypto::random_bytes::<12>())),
            body: Vec::new(),
        }
    }

    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }

    pub fn file(mut self, name: &str, filename: &str, content_type: &str, data: &[u8]) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// `(content_type, body)`.
    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example printed in the README ("Signing requests"). If this fails, the
    /// README is wrong.
    #[test]
    fn readme_worked_examples() {
        let body =
            br#"{"recipient":"6281234567890","type":"text","message":"Hello from RK Connect"}"#;
        assert_eq!(
            rk_signature("wgk_example", "wgs_example", "1709308800", body),
            "2a03504380ec6d0be130c1a237d96f12dd1ff39ba5e3450405ef4315f448f726"
        );
        // SendMessageRequest{recipient:"6281234567890", message:"Hello"} serialized.
        let msg = b"\x0a\x0d6281234567890\x1a\x05Hello";
        assert_eq!(
            grpc_signature(
                "wgk_example",
                "wgs_example",
                "1709308800",
                "/wagate.v1.MessagingService/SendMessage",
                msg
            ),
            "303cf7368c9e051399cca52dacb1a84b3251679b8e256454303f86e7f7b23c1b"
        );
    }
}
