//! SAK accounts (`/api/v1/auth/*`): register, log in, user API keys, the project's RK
//! credentials; transcoded onto `wagate.v1.AccountsService`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::Gateway;
use crate::proto::v1::accounts_service_server::AccountsService;
use crate::proto::v1::{
    ApiKey, CreateApiKeyRequest, GetCredentialsRequest, ListApiKeysRequest, LoginRequest,
    RegisterRequest, RotateCredentialsRequest, User,
};
use crate::transport::grpc::accounts::AccountsApi;
use crate::transport::rest::auth::{AccountToken, Open, secured};
use crate::transport::rest::call;
use crate::transport::rest::envelope::{ApiResult, ErrorBody, Success, success};
use crate::transport::rest::extract::{Json, OptionalJson};
use crate::transport::rest::rfc3339_of;

/// The open routes (register, log in): each behind the tight per-address limit.
pub fn open_routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<Open, _>(routes!(register)))
        .routes(secured::<Open, _>(routes!(login)))
}

/// The account's own routes (its JWT).
pub fn account_routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<AccountToken, _>(routes!(
            create_api_key,
            list_api_keys
        )))
        .routes(secured::<AccountToken, _>(routes!(rk_credentials)))
        .routes(secured::<AccountToken, _>(routes!(rotate_rk_credentials)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserData {
    id: String,
    email: String,
    name: String,
    project_id: String,
    created_at: String,
}

impl From<User> for UserData {
    fn from(u: User) -> Self {
        UserData {
            id: u.id,
            email: u.email,
            name: u.name,
            project_id: u.project_id,
            created_at: rfc3339_of(u.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuthData {
    user: UserData,
    /// JWT for `Authorization: Bearer …`.
    token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(format = "email", max_length = 254)]
    email: String,
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    password: String,
    /// Register only.
    name: Option<String>,
}

/// Create an account (and its project); answers a JWT.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    extensions(("x-grpc-method" = json!("wagate.v1.AccountsService/Register"))),
    request_body = Credentials,
    responses(
        (status = 201, body = inline(Success<AuthData>)),
        (status = 400, body = ErrorBody), (status = 409, description = "EMAIL_TAKEN", body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
pub async fn register(State(gw): State<Gateway>, Json(c): Json<Credentials>) -> ApiResult {
    let msg = RegisterRequest {
        email: c.email,
        password: c.password,
        name: c.name.unwrap_or_default(),
    };
    let r = call::answer(
        AccountsApi::new(gw.clone())
            .register(call::request(None, msg))
            .await,
    )?;
    let data = AuthData {
        user: r.user.unwrap_or_default().into(),
        token: r.token,
    };
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// Log in; answers a JWT.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    extensions(("x-grpc-method" = json!("wagate.v1.AccountsService/Login"))),
    request_body = Credentials,
    responses(
        (status = 200, body = inline(Success<AuthData>)),
        (status = 400, body = ErrorBody), (status = 401, description = "INVALID_CREDENTIALS", body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
pub async fn login(State(gw): State<Gateway>, Json(c): Json<Credentials>) -> ApiResult {
    let msg = LoginRequest {
        email: c.email,
        password: c.password,
    };
    let r = call::answer(
        AccountsApi::new(gw.clone())
            .login(call::request(None, msg))
            .await,
    )?;
    let data = AuthData {
        user: r.user.unwrap_or_default().into(),
        token: r.token,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct NewKey {
    name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyData {
    id: String,
    name: String,
    /// The raw key: shown in this answer only, stored hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    prefix: String,
    created_at: String,
}

impl ApiKeyData {
    fn new(k: ApiKey, raw: Option<String>) -> Self {
        ApiKeyData {
            id: k.id,
            name: k.name,
            api_key: raw,
            prefix: k.prefix,
            created_at: rfc3339_of(k.created_at),
        }
    }
}

/// Create a user API key ("master key"); the raw key is in this answer only.
#[utoipa::path(
    post, path = "/api/v1/auth/api-keys", tag = "auth",
    extensions(("x-grpc-method" = json!("wagate.v1.AccountsService/CreateApiKey"))),
    request_body(content = Option<NewKey>, description = "optional; an empty body takes the defaults"),
    responses(
        (status = 201, body = inline(Success<ApiKeyData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    )
)]
pub async fn create_api_key(
    State(gw): State<Gateway>,
    AccountToken(p): AccountToken,
    OptionalJson(req): OptionalJson<NewKey>,
) -> ApiResult {
    let msg = CreateApiKeyRequest {
        name: req.name.unwrap_or_default(),
    };
    let r = call::answer(
        AccountsApi::new(gw.clone())
            .create_api_key(call::request(Some(p), msg))
            .await,
    )?;
    let data = ApiKeyData::new(r.api_key.unwrap_or_default(), Some(r.key));
    Ok(success(StatusCode::CREATED, gw.node_id(), data))
}

/// The user's API keys (prefixes only, never the keys).
#[utoipa::path(
    get, path = "/api/v1/auth/api-keys", tag = "auth",
    extensions(("x-grpc-method" = json!("wagate.v1.AccountsService/ListApiKeys"))),
    responses((status = 200, body = inline(Success<Vec<ApiKeyData>>)), (status = 401, body = ErrorBody))
)]
pub async fn list_api_keys(State(gw): State<Gateway>, AccountToken(p): AccountToken) -> ApiResult {
    let r = call::answer(
        AccountsApi::new(gw.clone())
            .list_api_keys(call::request(Some(p), ListApiKeysRequest {}))
            .await,
    )?;
    let keys: Vec<ApiKeyData> = r
        .api_keys
        .into_iter()
        .map(|k| ApiKeyData::new(k, None))
        .collect();
    Ok(success(StatusCode::OK, gw.node_id(), keys))
}

/// The project's RK credentials (for `/api/v1/send` and gRPC).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RkCredentials {
    project_id: String,
    /// Reading: the key's prefix (the key itself is stored hashed).
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key_prefix: Option<String>,
    /// Rotation: the new key, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    api_secret: String,
}

/// The user's project credentials for the RK endpoints and gRPC.
#[utoipa::path(
    get, path = "/api/v1/auth/credentials", tag = "auth",
    extensions(("x-grpc-method" = json!("wagate.v1.AccountsService/GetCredentials"))),
    responses((status = 200, body = inline(Success<RkCredentials>)), (status = 401, body = ErrorBody))
)]
pub async fn rk_credentials(State(gw): State<Gateway>, AccountToken(p): AccountToken) -> ApiResult {
    let r = call::answer(
        AccountsApi::new(gw.clone())
            .get_credentials(call::request(Some(p), GetCredentialsRequest {}))
            .await,
    )?;
    let data = RkCredentials {
        project_id: r.project_id,
        api_key_prefix: Some(r.api_key_prefix),
        api_key: None,
        api_secret: r.api_secret,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}

/// New RK API key and secret for the project; the old ones stop working at once.
#[utoipa::path(
    post, path = "/api/v1/auth/credentials/rotate", tag = "auth",
    extensions(("x-grpc-method" = json!("wagate.v1.AccountsService/RotateCredentials"))),
    responses((status = 200, body = inline(Success<RkCredentials>)), (status = 401, body = ErrorBody))
)]
pub async fn rotate_rk_credentials(
    State(gw): State<Gateway>,
    AccountToken(p): AccountToken,
) -> ApiResult {
    let r = call::answer(
        AccountsApi::new(gw.clone())
            .rotate_credentials(call::request(Some(p), RotateCredentialsRequest {}))
            .await,
    )?;
    let data = RkCredentials {
        project_id: r.project_id,
        api_key_prefix: None,
        api_key: Some(r.api_key),
        api_secret: r.api_secret,
    };
    Ok(success(StatusCode::OK, gw.node_id(), data))
}
