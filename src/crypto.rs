//! Key material: the master key that encrypts secrets at rest, API key generation and
//! hashing, the HMAC primitives both signing schemes use, and jsonwebtoken's HS256 backend.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// 32 bytes that seal API and webhook secrets and, through a derived [`SealKey`], the WhatsApp
/// device keys (AES-256-GCM). Never logged: `Debug` is redacted.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Where the master key came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    ExistingFile(String),
    GeneratedFile(String),
}

impl MasterKey {
    /// Parses a key given as 64 hex characters or standard/URL-safe base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| STANDARD.decode(text).ok())
            .or_else(|| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
            .ok_or_else(|| Error::Internal("master key is neither hex nor base64".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Internal("master key must be 32 bytes".into()))?;
        Ok(MasterKey(key))
    }

    pub fn generate() -> Self {
        MasterKey(random_bytes())
    }

    /// Reads the key file, or creates it with a fresh key (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<(Self, KeySource)> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::parse(&text)?, KeySource::ExistingFile(shown))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_private_file(path, hex::encode(key.0).as_bytes())
                    .map_err(|e| Error::Internal(format!("cannot write key file {shown}: {e}")))?;
                Ok((key, KeySource::GeneratedFile(shown)))
            }
            Err(e) => Err(Error::Internal(format!(
                "cannot read key file {shown}: {e}"
            ))),
        }
    }

    /// A purpose-bound key derived from the master key (e.g. for signing session tokens):
    /// HMAC-SHA256 keyed by the master key over the label. The master key is already 32
    /// uniform bytes, so HMAC as a PRF is the whole derivation; it equals RFC 5869
    /// HKDF-Extract with the master key as salt (a test pins that), but not HKDF-Expand, which
    /// appends a counter byte. Every sealed device-store row and every issued JWT depends on
    /// these exact bytes, so the construction stays as it is.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        hmac_sha256(&self.0, &[label.as_bytes()])
    }

    /// A [`SealKey`] for one purpose, derived from the master key (`label` names the purpose
    /// and its format version, so a new format gets a new key).
    pub fn seal_key(&self, label: &str) -> SealKey {
        SealKey(Arc::new(Aes256Gcm::new(&self.derive(label).into())))
    }

    /// `base64(nonce ‖ ciphertext)`; a fresh random nonce each call.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let cipher = Aes256Gcm::new(&self.0.into());
        let nonce_bytes: [u8; 12] = random_bytes();
        let nonce = Nonce::from(nonce_bytes);
        let ct = cipher
            .encrypt(&nonce, plaintext)
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>> {
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| Error::Internal("sealed secret is not base64".into()))?;
        if raw.len() < 12 + 16 {
            return Err(Error::Internal("sealed secret is truncated".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        Aes256Gcm::new(&self.0.into())
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| {
                Error::Internal("cannot decrypt a stored secret: wrong WAGATE_MASTER_KEY?".into())
            })
    }
}

/// AES-256-GCM for binary records stored in database columns: `MAGIC ‖ nonce ‖ ciphertext`,
/// authenticated together with the caller's `aad` (where the record lives), so a sealed value
/// copied into another row or another session does not open. Cheap to clone.
#[derive(Clone)]
pub struct SealKey(Arc<Aes256Gcm>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    /// Leads every sealed record. A zero first byte never starts the plain records it
    /// replaces (JSON, protobuf); raw random ones are shorter than [`Self::OVERHEAD`].
    pub const MAGIC: &'static [u8; 8] = b"\0wgseal1";
    /// Bytes a sealed record adds to its plaintext (magic, nonce, tag).
    pub const OVERHEAD: usize = 8 + 12 + 16;

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; 12] = random_bytes();
        let ct = self
            .0
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(Self::OVERHEAD + plaintext.len());
        out.extend_from_slice(Self::MAGIC);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        out
    }

    /// Whether `stored` is in the sealed format (and not a plain record from before sealing).
    pub fn is_sealed(stored: &[u8]) -> bool {
        stored.len() >= Self::OVERHEAD && stored.starts_with(Self::MAGIC)
    }

    pub fn open(&self, aad: &[u8], stored: &[u8]) -> Result<Vec<u8>> {
        if !Self::is_sealed(stored) {
            return Err(Error::Internal("record is not sealed".into()));
        }
        let (nonce, ct) = stored[Self::MAGIC.len()..].split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        self.0
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| {
                Error::Internal("cannot decrypt a stored record: wrong WAGATE_MASTER_KEY?".into())
            })
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("operating system RNG unavailable");
    buf
}

/// A high-entropy token with a readable prefix, e.g. `wgk_…`.
pub fn random_token(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// API keys carry 256 random bits, so a plain SHA-256 is a sound lookup hash (no KDF needed).
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether a presented token equals the configured one. Compared as digests in constant
/// time: equal-length inputs, so the time taken says nothing of the token.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (
        sha2::Sha256::digest(given.as_bytes()),
        sha2::Sha256::digest(expected.as_bytes()),
    );
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of a computed MAC with a client-supplied one.
pub fn verify_hmac_sha256(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.verify_slice(expected).is_ok()
}

/// Makes jsonwebtoken sign and verify HS256 with [`hmac_sha256`] (process-wide, idempotent;
/// call before `jsonwebtoken::encode`/`decode`). jsonwebtoken's own backends would bring
/// aws-lc or RSA and elliptic-curve stacks that wagate never uses; this one accepts HS256 only.
pub fn use_hs256_for_jwt() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    // A provider someone installed first stays: whichever it is, it is process-wide.
    INSTALL.call_once(|| {
        let _ = jwt_hs256::PROVIDER.install_default();
    });
}

mod jwt_hs256 {
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{ErrorKind, Result};
    use jsonwebtoken::signature::{self, Signer, Verifier};
    use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

    pub(super) static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory,
        verifier_factory,
        key_utils: KeyUtils::new_unimplemented(),
    };

    /// An HS256 key: signs with [`super::hmac_sha256`], verifies in constant time.
    struct Hs256(Vec<u8>);

    fn signer_factory(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
        if *alg != Algorithm::HS256 || key.family() != AlgorithmFamily::Hmac {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        Ok(Box::new(Hs256(key.as_bytes().to_vec())))
    }

    fn verifier_factory(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
        if *alg != Algorithm::HS256 || key.family() != AlgorithmFamily::Hmac {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        Ok(Box::new(Hs256(key.try_get_as_bytes()?.to_vec())))
    }

    impl Signer<Vec<u8>> for Hs256 {
        fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
            Ok(super::hmac_sha256(&self.0, &[msg]).to_vec())
        }
    }

    impl JwtSigner for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    impl Verifier<Vec<u8>> for Hs256 {
        fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
            if super::verify_hmac_sha256(&self.0, &[msg], sig) {
                Ok(())
            } else {
                Err(signature::Error::new())
            }
        }
    }

    impl JwtVerifier for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }
}

pub fn base64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_roundtrip_and_tamper_detection() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"api-secret");
        assert_eq!(key.open(&sealed).unwrap(), b"api-secret");
        assert_ne!(key.seal(b"api-secret"), sealed, "nonce must be fresh");
        let other = MasterKey::generate();
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn seal_key_binds_records_to_their_place() {
        let master = MasterKey::generate();
        let key = master.seal_key("test v1");
        let sealed = key.seal(b"row-1", b"private key");
        assert!(SealKey::is_sealed(&sealed));
        assert_eq!(sealed.len(), SealKey::OVERHEAD + b"private key".len());
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(key.open(b"row-1", &sealed).unwrap(), b"private key");
        assert!(key.open(b"row-2", &sealed).is_err(), "moved to another row");
        assert!(master.seal_key("other v1").open(b"row-1", &sealed).is_err());
        assert!(
            MasterKey::generate()
                .seal_key("test v1")
                .open(b"row-1", &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"row-1", &tampered).is_err());
        assert_ne!(
            key.seal(b"row-1", b"private key"),
            sealed,
            "nonce must be fresh"
        );
        // Plain records from before sealing are told apart: JSON, protobuf, raw 32 bytes.
        assert!(!SealKey::is_sealed(br#"{"noise_key":[1,2]}"#));
        assert!(!SealKey::is_sealed(&[0x0a; 200]));
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(SealKey::MAGIC);
        assert!(!SealKey::is_sealed(&raw));
        assert!(key.open(b"row-1", b"{}").is_err());
    }

    /// The master key the fixed vectors below were made with (bytes 0..32).
    const VECTOR_MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    /// Derived keys are those the code before this one derived: JWTs already issued and
    /// device-store rows already sealed depend on them.
    #[test]
    fn derived_keys_are_unchanged() {
        let master = MasterKey::parse(VECTOR_MASTER).unwrap();
        assert_eq!(
            hex::encode(master.derive("wagate/jwt/v1")),
            "77009cc847cb4f3c29edbfc8b5bf94c69b1e1174cbde7af0ce5057523d66d46a"
        );
        assert_eq!(
            hex::encode(master.derive("wagate device store v1")),
            "7b29c5d306b3edef1f70da869470118a1194d5d6c0510b4ef66d7d386cf1a51f"
        );
        // Sealed by the code before this one, with its random nonce.
        let sealed = hex::decode(
            "0077677365616c31cc1bed8fb5f7aaa2717c823cdbf370342fc840cde60a626bdddf5659ad07e5c6\
             fb5c9ad7c483b7dd12c1b453b98169cfb897370e289201",
        )
        .unwrap();
        let key = master.seal_key("wagate device store v1");
        assert_eq!(
            key.open(b"device-1/identity", &sealed).unwrap(),
            b"sealed by the pre-hkdf code"
        );
    }

    /// `derive` is standard HKDF-Extract (salt = master key, input = label), so a move to the
    /// hkdf crate, if ever wanted, keeps every derived key.
    #[test]
    fn derive_is_hkdf_extract_with_the_master_key_as_salt() {
        let master = MasterKey::parse(VECTOR_MASTER).unwrap();
        for label in ["wagate/jwt/v1", "wagate device store v1", ""] {
            let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(&master.0), label.as_bytes());
            assert_eq!(prk.as_slice(), master.derive(label), "{label}");
        }
    }

    #[test]
    fn master_key_parses_hex_and_base64() {
        let hex_key = "00".repeat(32);
        assert!(MasterKey::parse(&hex_key).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::parse("short").is_err());
    }
}
