//! The REST credential schemes, as extractors. A handler takes the one its surface documents as
//! an argument, so a handler without auth does not compile; each extractor resolves a
//! [`Principal`] (checked again by the gRPC method it transcodes onto, which is what decides
//! scope) and declares its scheme in the OpenAPI document through [`Scheme`].
//!
//! - [`Signed`]: RK signing (`X-API-KEY`/`X-TIMESTAMP`/`X-SIGNATURE`) or the Mekari/Qontak
//!   `Authorization: hmac …` scheme, verified over the raw body, which it hands over.
//! - [`SakManager`]: the account's JWT or a user API key; a session key is refused.
//! - [`SakReader`]: as [`SakManager`], or a session's own key (the method checks the session).
//! - [`AccountToken`]: the account's JWT only.
//! - [`Messenger`]: a SAK `x-api-key`, narrowed to the session it acts for: its own, or the one a
//!   user key names in `x-session-id` or, where the body can say it, the body's `sessionId`.
//! - [`MetricsReader`]: the operator's metrics token, when one is set.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Object, Required, Type};
use utoipa_axum::router::UtoipaMethodRouter;

use super::envelope::ApiError;
use super::extract::{Json, OptionalJson};
use super::form::Part;
use crate::domain::Gateway;
use crate::domain::auth::{QontakHead, RkHeaders};
use crate::domain::principal::Principal;
use crate::error::Error;
use crate::transport::error::Refusal;
use crate::transport::limits::read_body;

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A header that must be text when present: invalid UTF-8 is an error naming the header,
/// not a missing header.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Error> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| Error::InvalidRequest(format!("the {name} header must be ASCII text"))),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let auth = header_str(headers, header::AUTHORIZATION.as_str())?;
    Some(
        auth.strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or(""),
    )
}

/// How an extractor's scheme shows in the OpenAPI document.
pub trait Scheme {
    fn declare(op: &mut Operation);
}

/// Declares `S` on every operation of a `routes!(…)` group: the group's handlers take `S`.
pub fn secured<S: Scheme, St>(mut r: UtoipaMethodRouter<St>) -> UtoipaMethodRouter<St> {
    for item in r.1.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            S::declare(op);
        }
    }
    r
}

fn require(op: &mut Operation, schemes: &[&str]) {
    let security = op.security.get_or_insert_with(Vec::new);
    for s in schemes {
        security.push(SecurityRequirement::new(*s, Vec::<String>::new()));
    }
}

fn header_param(op: &mut Operation, name: &str, description: &str) {
    let param = ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(Object::with_type(Type::String)))
        .build();
    op.parameters.get_or_insert_with(Vec::new).insert(0, param);
}

/// A request signed with RK's or Mekari/Qontak's scheme, its body (at most `LIMIT` bytes)
/// read only once the key and timestamp are known, and verified.
pub struct Signed<const LIMIT: usize> {
    pub principal: Principal,
    pub body: Bytes,
}

impl<const LIMIT: usize> FromRequest<Gateway> for Signed<LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Gateway) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        let pending = match header_str(headers, header::AUTHORIZATION.as_str()) {
            Some(auth) if auth.len() > 5 && auth[..5].eq_ignore_ascii_case("hmac ") => {
                gw.begin_qontak(QontakHead {
                    authorization: auth,
                    date: header_str(headers, header::DATE.as_str()),
                    digest: header_str(headers, "digest"),
                    method: parts.method.as_str(),
                    path_and_query: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/"),
                    unsigned_body: false,
                })
                .await?
            }
            _ => {
                gw.begin_rk(RkHeaders {
                    api_key: header_str(headers, "x-api-key"),
                    timestamp: header_str(headers, "x-timestamp"),
                    signature: header_str(headers, "x-signature"),
                })
                .await?
            }
        };
        let body = read_body(gw, body, LIMIT).await?;
        let caller = pending.verify(gw, &[&body]).await?;
        Ok(Signed {
            principal: Principal::Project(caller),
            body,
        })
    }
}

impl<const LIMIT: usize> Scheme for Signed<LIMIT> {
    fn declare(op: &mut Operation) {
        header_param(
            op,
            "X-SIGNATURE",
            "hex HMAC-SHA256(api_secret, api_key + timestamp + raw_body); or sign with \
             `Authorization: hmac …` (Mekari/Qontak) instead of the three X- headers",
        );
        header_param(op, "X-TIMESTAMP", "Unix seconds");
        header_param(op, "X-API-KEY", "project API key");
    }
}

/// The JWT or the `x-api-key` of a SAK request, resolved from the headers alone (before any
/// body is read, so an unknown credential costs nothing).
async fn sak_principal(gw: &Gateway, headers: &HeaderMap) -> Result<Principal, Error> {
    if let Some(token) = bearer(headers) {
        if token.is_empty() {
            return Err(Error::NoToken);
        }
        return gw.principal_for_token(token).await;
    }
    let key = header_str(headers, "x-api-key").ok_or(Error::NoToken)?;
    gw.sak_key(key).await
}

/// SAK management: the account's JWT or a user API key; a session's key is refused.
pub struct SakManager(pub Principal);

impl FromRequestParts<Gateway> for SakManager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        let p = sak_principal(gw, &parts.headers).await?;
        p.manager()?;
        Ok(SakManager(p))
    }
}

impl Scheme for SakManager {
    fn declare(op: &mut Operation) {
        require(op, &["bearer", "apiKey"]);
    }
}

/// Reading one session: as [`SakManager`], or that session's own key.
pub struct SakReader(pub Principal);

impl FromRequestParts<Gateway> for SakReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        Ok(SakReader(sak_principal(gw, &parts.headers).await?))
    }
}

impl Scheme for SakReader {
    fn declare(op: &mut Operation) {
        require(op, &["bearer", "apiKey"]);
    }
}

/// The account itself (its API keys, its RK credentials): only its JWT.
pub struct AccountToken(pub Principal);

impl FromRequestParts<Gateway> for AccountToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)
            .filter(|t| !t.is_empty())
            .ok_or(Error::NoToken)?;
        Ok(AccountToken(gw.principal_for_token(token).await?))
    }
}

impl Scheme for AccountToken {
    fn declare(op: &mut Operation) {
        require(op, &["bearer"]);
    }
}

/// The cluster's operator: `Authorization: Bearer <WAGATE_ADMIN_TOKEN>`. Without a configured
/// token the cluster endpoints answer `404 OPERATOR_API_DISABLED`.
pub struct OperatorToken(pub crate::domain::cluster::Operator);

impl FromRequestParts<Gateway> for OperatorToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).filter(|t| !t.is_empty());
        Ok(OperatorToken(gw.operator(token)?))
    }
}

impl Scheme for OperatorToken {
    fn declare(op: &mut Operation) {
        require(op, &["operatorToken"]);
    }
}

/// No credential: the calls that obtain one (register, log in).
pub struct Open;

impl Scheme for Open {
    fn declare(op: &mut Operation) {
        // An empty requirement list overrides any default: the operation is public.
        op.security = Some(Vec::new());
    }
}

/// The body of a SAK messaging request, as its endpoint reads it.
pub trait MessagingBody: Sized {
    /// Whether the body may name the acting session (then it is read before the session is
    /// resolved; else the session comes from `x-session-id` alone, before the body is read).
    const NAMES_SESSION: bool;

    fn read(
        gw: &Gateway,
        headers: &HeaderMap,
        body: Body,
    ) -> impl Future<Output = Result<Self, ApiError>> + Send;

    fn session_id(&self) -> Option<&str> {
        None
    }
}

/// A JSON body that may name the session (`sessionId`).
pub trait NamesSession {
    fn session_id(&self) -> Option<&str>;
}

impl<T: DeserializeOwned + NamesSession + Send> MessagingBody for Json<T> {
    const NAMES_SESSION: bool = true;

    async fn read(gw: &Gateway, _: &HeaderMap, body: Body) -> Result<Self, ApiError> {
        Ok(Json(super::extract::json(gw, body).await?))
    }

    fn session_id(&self) -> Option<&str> {
        self.0.session_id()
    }
}

impl<T: DeserializeOwned + Default + NamesSession + Send> MessagingBody for OptionalJson<T> {
    const NAMES_SESSION: bool = true;

    async fn read(gw: &Gateway, _: &HeaderMap, body: Body) -> Result<Self, ApiError> {
        Ok(OptionalJson(super::extract::optional_json(gw, body).await?))
    }

    fn session_id(&self) -> Option<&str> {
        self.0.session_id()
    }
}

/// No body (a GET).
pub struct NoBody;

impl MessagingBody for NoBody {
    const NAMES_SESSION: bool = false;

    async fn read(_: &Gateway, _: &HeaderMap, _: Body) -> Result<Self, ApiError> {
        Ok(NoBody)
    }
}

/// A `multipart/form-data` body of at most [`super::MAX_BODY_BYTES`].
pub struct MultipartBody(pub Vec<Part>);

impl MessagingBody for MultipartBody {
    const NAMES_SESSION: bool = false;

    async fn read(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<Self, ApiError> {
        let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
        if !content_type
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
        {
            return Err(Refusal::UnsupportedContentType.into());
        }
        let body = read_body(gw, body, super::MAX_BODY_BYTES).await?;
        Ok(MultipartBody(super::form::parse(content_type, body).await?))
    }
}

/// A SAK messaging call: `x-api-key` (a session's key, or a user key with the session named
/// by `x-session-id` or the body), narrowed to the session it acts for, and its body. The key
/// is checked before the body is read; a problem with the session is answered before one with
/// the body.
pub struct Messenger<B> {
    pub principal: Principal,
    pub body: B,
}

impl<B: MessagingBody + Send> FromRequest<Gateway> for Messenger<B> {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Gateway) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        let key = header_str(headers, "x-api-key")
            .filter(|k| !k.is_empty())
            .ok_or(Error::NoApiKey)?;
        let principal = gw.sak_key(key).await?;
        let named = header_str(headers, "x-session-id");
        if !B::NAMES_SESSION {
            let principal = principal.for_session(gw, named).await?;
            let body = B::read(gw, headers, body).await?;
            return Ok(Messenger { principal, body });
        }
        let body = B::read(gw, headers, body).await;
        let hint = named.or_else(|| body.as_ref().ok().and_then(B::session_id));
        let principal = principal.for_session(gw, hint).await?;
        Ok(Messenger {
            principal,
            body: body?,
        })
    }
}

impl<B> Scheme for Messenger<B> {
    fn declare(op: &mut Operation) {
        require(op, &["apiKey"]);
    }
}

/// The operator's `/metrics` token (`Authorization: Bearer <WAGATE_METRICS_TOKEN>`), when one
/// is set; without one, anyone who reaches the port may read metrics.
pub struct MetricsReader;

impl FromRequestParts<Gateway> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        if let Some(token) = &gw.settings().http.metrics_token {
            let given = bearer(&parts.headers).unwrap_or("");
            if !crate::crypto::tokens_match(given, token) {
                return Err(Error::InvalidToken.into());
            }
        }
        Ok(MetricsReader)
    }
}
