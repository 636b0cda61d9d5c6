//! The SAK account model: a registered user owns one project (the same project the RK
//! endpoints and gRPC serve), logs in for a JWT, creates user API keys to manage sessions,
//! and each session has its own API key for messaging.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::Gateway;
use super::admin::NewProject;
use super::auth::Caller;
use super::principal::Principal;
use super::text::{no_nul, no_nul_opt};
use crate::crypto;
use crate::error::{Error, Result};
use crate::storage::accounts::{self as store, UserKeyRow, UserRow};
use crate::storage::{now_ms, projects};
use crate::values::ProjectId;

/// Session tokens (JWT, HS256) live this long.
const TOKEN_TTL_SECS: i64 = 24 * 3600;
const MIN_PASSWORD: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    pid: String,
    iat: i64,
    exp: i64,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub project_id: ProjectId,
    pub created_at: i64,
}

/// A user who registered or logged in, with the session token (JWT) issued for it.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub token: String,
}

/// A user API key just created; the raw key is shown only here.
#[derive(Debug, Clone)]
pub struct CreatedUserKey {
    pub key: UserKeyRow,
    pub api_key: String,
}

/// A project's RK credentials as the account sees them: the key's prefix (the key itself
/// is stored only hashed) and the signing secret.
#[derive(Debug, Clone)]
pub struct RkCredentials {
    pub project_id: ProjectId,
    pub api_key_prefix: String,
    pub api_secret: Arc<str>,
}

/// Fresh RK credentials, shown only here (the old key stops working at once).
#[derive(Debug, Clone)]
pub struct NewRkCredentials {
    pub api_key: String,
    pub api_secret: String,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> Self {
        User {
            id: u.id,
            email: u.email,
            name: u.name,
            project_id: u.project_id,
            created_at: u.created_at,
        }
    }
}

/// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for `password`, computed in
/// `memory` (a hashing thread's own block, reused from one hash to the next).
fn hash_password(password: &str, memory: &mut [argon2::Block]) -> Result<String> {
    use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
    let fail = |e: &dyn std::fmt::Display| Error::Internal(format!("password hashing: {e}"));
    let argon = argon2::Argon2::default();
    let salt = crypto::random_bytes::<16>();
    let mut out = [0u8; 32];
    let blocks = argon.params().block_count();
    argon
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut memory[..blocks])
        .map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).map_err(|e| fail(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| fail(&e))?),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `hash`, computed in `memory` when its
/// parameters fit there (always for hashes this gateway made).
fn verify_password(password: &str, hash: &str, memory: &mut [argon2::Block]) -> bool {
    use argon2::password_hash::phc::PasswordHash;
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        argon2::Params::try_from(&phc),
        argon2::Algorithm::try_from(phc.algorithm.as_str()),
    ) else {
        return false;
    };
    let version = match phc.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let blocks = params.block_count();
    let argon = argon2::Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.as_bytes().len()];
    let done = if blocks <= memory.len() {
        argon.hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
    } else {
        argon.hash_password_into(password.as_bytes(), salt.as_ref(), &mut out)
    };
    use subtle::ConstantTimeEq;
    done.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// Bounds password hashing: each Argon2 run takes ~19 MiB and a core for tens of
/// milliseconds, so at most `concurrency` run at once, a few more wait briefly, and the
/// rest are refused at once with `503 SERVER_BUSY` (`Retry-After`) instead of piling up
/// memory. The per-IP limit cannot do this: an attacker has many addresses. The hashes run
/// on `concurrency` threads of their own: the allocator keeps a freed 19 MiB block for the
/// thread that used it, so on the shared blocking pool (hundreds of threads) the memory
/// kept would grow with every thread that ever hashed.
pub struct PasswordHasherPool {
    permits: tokio::sync::Semaphore,
    jobs: std::sync::mpsc::Sender<HashJob>,
    /// Callers allowed to wait for a permit (beyond those running).
    queue: usize,
    waiting: std::sync::atomic::AtomicUsize,
    wait: std::time::Duration,
}

/// Work for a hashing thread, given that thread's Argon2 memory.
type HashJob = Box<dyn FnOnce(&mut [argon2::Block]) + Send>;

/// Tunables of [`PasswordHasherPool`].
#[derive(Debug, Clone)]
pub struct HashingSettings {
    /// Hashes computed at once (default: the number of cores).
    pub concurrency: usize,
    /// Callers that may wait for a slot (default: 4 per slot).
    pub queue: usize,
    /// How long a caller waits for a slot before `SERVER_BUSY`.
    pub wait: std::time::Duration,
}

impl Default for HashingSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        HashingSettings {
            concurrency: cores,
            queue: 4 * cores,
            wait: std::time::Duration::from_secs(2),
        }
    }
}

impl PasswordHasherPool {
    pub fn new(s: &HashingSettings) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..s.concurrency.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || {
                    // Allocated at the first hash and kept: a fresh 19 MiB block per hash
                    // fragments the heap, and the allocator then keeps several per thread.
                    let mut memory: Vec<argon2::Block> = Vec::new();
                    loop {
                        // The lock is held only to take a job; the pool ends with its sender.
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            // A panic fails its caller (the result is dropped), not the thread.
                            Ok(job) => {
                                if memory.is_empty() {
                                    let blocks = argon2::Params::default().block_count();
                                    memory = vec![argon2::Block::default(); blocks];
                                }
                                let run = std::panic::AssertUnwindSafe(|| job(&mut memory));
                                let _ = std::panic::catch_unwind(run);
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn a password hashing thread");
        }
        PasswordHasherPool {
            permits: tokio::sync::Semaphore::new(s.concurrency.max(1)),
            jobs,
            queue: s.queue,
            waiting: Default::default(),
            wait: s.wait,
        }
    }

    /// Runs `f` (a hash or a verification) on the blocking pool once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut [argon2::Block]) -> T + Send + 'static,
    ) -> Result<T> {
        use std::sync::atomic::Ordering;
        let permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(Error::Overloaded);
                }
                let got = tokio::time::timeout(self.wait, self.permits.acquire()).await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match got {
                    Ok(Ok(p)) => p,
                    _ => return Err(Error::Overloaded),
                }
            }
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move |memory| {
            let _ = done.send(f(memory));
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal("password hashing threads are gone".into()))?;
        let out = result
            .await
            .map_err(|_| Error::Internal("a password hash panicked".into()));
        drop(permit);
        out
    }
}

/// Signs session claims as a JWT (HS256, header `alg: HS256, typ: JWT`).
fn sign_token(key: &[u8; 32], claims: &Claims) -> String {
    crypto::use_hs256_for_jwt();
    let key = EncodingKey::from_secret(key).expect("a 32-byte HMAC key is accepted");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .expect("HS256 over serializable claims cannot fail")
}

/// The claims of a token signed with `key`, if its signature holds and it has not expired.
fn verify_token(key: &[u8; 32], token: &str) -> Result<Claims> {
    crypto::use_hs256_for_jwt();
    let key = DecodingKey::from_secret(key).expect("a 32-byte HMAC key is accepted");
    let mut validation = Validation::new(Algorithm::HS256);
    // Expired at `exp`, no grace period (as tokens have always been checked).
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token.trim(), &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| Error::InvalidToken)
}

impl Gateway {
    fn jwt_key(&self) -> [u8; 32] {
        self.inner.key.derive("wagate/jwt/v1")
    }

    fn signed_in(&self, user: User) -> SignedIn {
        let token = self.issue_token(&user);
        SignedIn { user, token }
    }

    fn issue_token(&self, user: &User) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.id.clone(),
            pid: user.project_id.to_string(),
            iat: now,
            exp: now + TOKEN_TTL_SECS,
        };
        sign_token(&self.jwt_key(), &claims)
    }

    /// The user a bearer token names, if the token is ours and unexpired.
    pub async fn user_from_token(&self, token: &str) -> Result<User> {
        let claims = verify_token(&self.jwt_key(), token)?;
        let user = self
            .db()
            .run(move |c| store::user_by_id(c, &claims.sub))
            .await?
            .ok_or(Error::InvalidToken)?;
        Ok(user.into())
    }

    /// Creates the user and the project it owns; returns the user and a token.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: Option<&str>,
    ) -> Result<SignedIn> {
        no_nul("email", email)?;
        no_nul("password", password)?;
        no_nul_opt("name", name)?;
        let email = email.trim().to_ascii_lowercase();
        if email.len() > 254
            || !email.contains('@')
            || email.starts_with('@')
            || email.ends_with('@')
        {
            return Err(Error::InvalidRequest("a valid email is required".into()));
        }
        if password.chars().count() < MIN_PASSWORD || password.len() > 1024 {
            return Err(Error::InvalidRequest(format!(
                "password must be at least {MIN_PASSWORD} characters"
            )));
        }
        let e = email.clone();
        if self
            .db()
            .run(move |c| store::user_by_email(c, &e))
            .await?
            .is_some()
        {
            return Err(Error::EmailTaken);
        }
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(&email)
            .to_owned();
        // Hashed before anything is created: a refusal (SERVER_BUSY) leaves nothing behind.
        let pw = password.to_owned();
        let password_hash = self
            .inner
            .hashing
            .run(move |m| hash_password(&pw, m))
            .await??;
        let project = self
            .admin()
            .create_project(NewProject {
                name: name.clone(),
                rate_limit_per_minute: 60,
                monthly_quota: 3000,
                max_sessions: 10,
            })
            .await?;
        let row = UserRow {
            id: uuid::Uuid::now_v7().to_string(),
            email,
            name,
            password_hash,
            project_id: ProjectId::from(project.project_id),
            created_at: now_ms(),
        };
        let insert = row.clone();
        self.db()
            .run(move |c| store::insert_user(c, &insert))
            .await?;
        Ok(self.signed_in(User::from(row)))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<SignedIn> {
        no_nul("email", email)?;
        no_nul("password", password)?;
        let email = email.trim().to_ascii_lowercase();
        let row = self
            .db()
            .run(move |c| store::user_by_email(c, &email))
            .await?;
        let pw = password.to_owned();
        // Verify against a dummy hash for unknown emails too, so timing does not tell.
        let hash = row.as_ref().map(|r| r.password_hash.clone());
        let ok = self
            .inner
            .hashing
            .run(move |m| match hash {
                Some(h) => verify_password(&pw, &h, m),
                None => {
                    let _ = hash_password(&pw, m);
                    false
                }
            })
            .await?;
        match (row, ok) {
            (Some(r), true) => Ok(self.signed_in(User::from(r))),
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// A new user API key; the raw key is returned only here.
    pub async fn create_user_api_key(
        &self,
        user: &User,
        name: Option<&str>,
    ) -> Result<CreatedUserKey> {
        no_nul_opt("name", name)?;
        let raw = crypto::random_token("sak_");
        let row = UserKeyRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.id.clone(),
            name: name.unwrap_or("default").chars().take(100).collect(),
            key_hash: crypto::hash_api_key(&raw),
            key_prefix: raw[..12].to_owned(),
            created_at: now_ms(),
        };
        let insert = row.clone();
        self.db()
            .run(move |c| store::insert_user_key(c, &insert))
            .await?;
        Ok(CreatedUserKey {
            key: row,
            api_key: raw,
        })
    }

    pub async fn list_user_api_keys(&self, user: &User) -> Result<Vec<UserKeyRow>> {
        let id = user.id.clone();
        self.db().run(move |c| store::list_user_keys(c, &id)).await
    }

    pub async fn caller_for_user(&self, user: &User) -> Result<Caller> {
        self.caller_for_project(&user.project_id).await
    }

    /// Resolves the `x-api-key` of a SAK request: a session's key, or a user's. Done from the
    /// headers alone, before any body is read, so an unknown key costs nothing.
    pub async fn sak_key(&self, key: &str) -> Result<Principal> {
        let hash = crypto::hash_api_key(key);
        let h = hash.clone();
        if let Some(session) = self
            .db()
            .run(move |c| store::session_by_key_hash(c, &h))
            .await?
        {
            let caller = self.caller_for_project(&session.project_id).await?;
            return Ok(Principal::Session {
                caller,
                session: Arc::new(session),
            });
        }
        let user = self
            .db()
            .run(move |c| store::user_by_key_hash(c, &hash))
            .await?
            .ok_or(Error::InvalidApiKey)?;
        let caller = self.caller_for_project(&user.project_id).await?;
        Ok(Principal::UserKey(caller))
    }

    /// The RK credentials of the user's project: a fresh API key and secret (the old key
    /// stops working at once).
    pub async fn rotate_rk_credentials(&self, user: &User) -> Result<NewRkCredentials> {
        let (key, secret) = (crypto::random_token("wgk_"), crypto::random_token("wgs_"));
        let (pid, hash, prefix, sealed) = (
            user.project_id.clone(),
            crypto::hash_api_key(&key),
            key[..12].to_owned(),
            self.inner.key.seal(secret.as_bytes()),
        );
        self.db()
            .run(move |c| projects::set_credentials(c, &pid, &hash, &prefix, &sealed))
            .await?;
        Ok(NewRkCredentials {
            api_key: key,
            api_secret: secret,
        })
    }

    /// The project's API key prefix and its secret (the key itself is stored only hashed).
    pub async fn rk_credentials(&self, user: &User) -> Result<RkCredentials> {
        let caller = self.caller_for_project(&user.project_id).await?;
        let secret =
            String::from_utf8(caller.project.secret().to_vec()).map_err(Error::internal)?;
        Ok(RkCredentials {
            project_id: caller.project.row.id.clone(),
            api_key_prefix: caller.project.row.api_key_prefix.clone(),
            api_secret: secret.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// Tokens signed by the hand-written HS256 code this module had before jsonwebtoken, with
    /// master key bytes 0..32: one valid until 2100, one expired in 2023.
    const OLD_VALID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiIwMTkwYzJhNC03YTRiLTdjYzAtOWEzZS01ZjFkMmMzYjRhNTkiLCJwaWQiOiIwMTkwYzJhNC03YTRi\
        LTdjYzAtOWEzZS01ZjFkMmMzYjRhNjAiLCJpYXQiOjQxMDIzNTg0MDAsImV4cCI6NDEwMjQ0NDgwMH0.\
        rfutNoAne-XgqTLHSWKmoN7LtSR2OExWPoY3wpBe48E";
    const OLD_EXPIRED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiIwMTkwYzJhNC03YTRiLTdjYzAtOWEzZS01ZjFkMmMzYjRhNTkiLCJwaWQiOiIwMTkwYzJhNC03YTRi\
        LTdjYzAtOWEzZS01ZjFkMmMzYjRhNjAiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDA4NjQwMH0.\
        ny7DvvhSgew0mJuhUMGH4xd5MU0wxIFBagR4FDZERJo";

    fn vector_key() -> [u8; 32] {
        crypto::MasterKey::parse(&hex::encode((0u8..32).collect::<Vec<_>>()))
            .unwrap()
            .derive("wagate/jwt/v1")
    }

    #[test]
    fn tokens_issued_before_jsonwebtoken_stay_valid() {
        let claims = verify_token(&vector_key(), OLD_VALID).unwrap();
        assert_eq!(claims.sub, "0190c2a4-7a4b-7cc0-9a3e-5f1d2c3b4a59");
        assert_eq!(claims.pid, "0190c2a4-7a4b-7cc0-9a3e-5f1d2c3b4a60");
        assert_eq!((claims.iat, claims.exp), (4_102_358_400, 4_102_444_800));
        // Surrounding whitespace was always forgiven.
        assert!(verify_token(&vector_key(), &format!(" {OLD_VALID}\n")).is_ok());
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let key = vector_key();
        assert!(matches!(
            verify_token(&key, OLD_EXPIRED),
            Err(Error::InvalidToken)
        ));
        // Another user's id in the payload, the signature left as it was.
        let (head, rest) = OLD_VALID.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap())
                .unwrap()
                .replace("4a59", "4a5a"),
        );
        assert!(verify_token(&key, &format!("{head}.{forged}.{sig}")).is_err());
        // Signed with another master key.
        let other = crypto::MasterKey::generate().derive("wagate/jwt/v1");
        assert!(verify_token(&other, OLD_VALID).is_err());
        // alg "none" with the signature stripped, and a malformed token.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(verify_token(&key, &format!("{none}.{payload}.")).is_err());
        assert!(verify_token(&key, "nope.nope.nope").is_err());
    }

    #[test]
    fn new_tokens_verify_and_keep_the_header() {
        let key = vector_key();
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "u".into(),
            pid: "p".into(),
            iat: now,
            exp: now + TOKEN_TTL_SECS,
        };
        let token = sign_token(&key, &claims);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let back = verify_token(&key, &token).unwrap();
        assert_eq!((back.sub.as_str(), back.exp), ("u", now + TOKEN_TTL_SECS));
        // Expiry is exact: one second past `exp` is refused.
        let stale = Claims {
            exp: now - 1,
            ..claims
        };
        assert!(verify_token(&key, &sign_token(&key, &stale)).is_err());
    }
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    /// Hashes made in a thread's reused memory are ordinary PHC strings: argon2's own
    /// verifier accepts them, and hashes made the crate's way (every account registered
    /// before) verify in reused memory.
    #[test]
    fn reused_memory_hashes_are_standard_argon2id() {
        let mut memory = vec![argon2::Block::default(); argon2::Params::default().block_count()];
        let ours = hash_password("correct horse", &mut memory).unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let argon = argon2::Argon2::default();
        assert!(
            argon
                .verify_password(b"correct horse", ours.as_str())
                .is_ok()
        );
        assert!(
            argon
                .verify_password(b"wrong horse", ours.as_str())
                .is_err()
        );
        let theirs = argon
            .hash_password_with_salt(b"battery staple", &crypto::random_bytes::<16>())
            .unwrap()
            .to_string();
        assert!(verify_password("battery staple", &theirs, &mut memory));
        assert!(!verify_password("battery stable", &theirs, &mut memory));
        assert!(!verify_password("x", "not a phc string", &mut memory));
    }
}
