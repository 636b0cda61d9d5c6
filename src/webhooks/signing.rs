//! Both signature schemes a receiver may verify:
//!
//! - SAK: `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`, the key being the
//!   secret string as shown to the user.
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature:
//!   v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`, the key being the base64 part of
//!   `whsec_…` decoded. Several space-separated signatures during a secret rotation.

use crate::crypto::{base64_decode, base64_encode, hmac_sha256};

/// The headers of one signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub sak: String,
    pub standard: String,
}

/// Signs `body` for a delivery attempt. `secrets` lists the current secret first, then the
/// previous one while its overlap lasts; the SAK header (one value only) uses the oldest
/// still valid, so a receiver not yet switched keeps verifying until the overlap ends.
pub fn sign(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Signed {
    let sak_secret = secrets.last().copied().unwrap_or_default();
    let sak = format!(
        "sha256={}",
        hex::encode(hmac_sha256(sak_secret.as_bytes(), &[body]))
    );
    let ts = timestamp.to_string();
    let standard = secrets
        .iter()
        .map(|s| {
            let key = standard_key(s);
            let mac = hmac_sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            format!("v1,{}", base64_encode(&mac))
        })
        .collect::<Vec<_>>()
        .join(" ");
    Signed { sak, standard }
}

/// The Standard Webhooks key: the base64 after `whsec_`, or the raw string if it is not such.
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(base64_decode)
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published example.
    #[test]
    fn standard_webhooks_reference_vector() {
        let s = sign(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            s.standard,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn sak_signature_is_hex_hmac_of_the_body_with_the_secret_string() {
        let s = sign(&["whsec_abc"], "e", 1, b"{}");
        let want = hex::encode(hmac_sha256(b"whsec_abc", &[b"{}"]));
        assert_eq!(s.sak, format!("sha256={want}"));
    }

    #[test]
    fn rotation_signs_with_both() {
        let s = sign(&["whsec_bmV3", "whsec_b2xk"], "e", 1, b"{}");
        assert_eq!(s.standard.split(' ').count(), 2);
        let old_only = sign(&["whsec_b2xk"], "e", 1, b"{}");
        assert_eq!(s.sak, old_only.sak);
    }
}
