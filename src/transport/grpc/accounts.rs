//! `wagate.v1.AccountsService` over the service layer: the SAK account model (register, log
//! in, user API keys, the project's RK credentials).

use tonic::{Request, Response, Status};

use super::auth::principal;
use super::convert::{non_empty, timestamp};
use crate::domain::Gateway;
use crate::domain::accounts::User as UserView;
use crate::proto::v1::accounts_service_server::AccountsService;
use crate::proto::v1::*;
use crate::storage::accounts::UserKeyRow;

pub struct AccountsApi {
    gw: Gateway,
}

impl AccountsApi {
    pub fn new(gw: Gateway) -> Self {
        AccountsApi { gw }
    }
}

fn user(u: &UserView) -> User {
    User {
        id: u.id.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        project_id: u.project_id.to_string(),
        created_at: Some(timestamp(u.created_at)),
    }
}

fn api_key(k: UserKeyRow) -> ApiKey {
    ApiKey {
        id: k.id,
        name: k.name,
        prefix: k.key_prefix,
        created_at: Some(timestamp(k.created_at)),
    }
}

#[tonic::async_trait]
impl AccountsService for AccountsApi {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let m = req.into_inner();
        let name = non_empty(m.name);
        let signed_in = self
            .gw
            .register(&m.email, &m.password, name.as_deref())
            .await?;
        Ok(Response::new(RegisterResponse {
            user: Some(user(&signed_in.user)),
            token: signed_in.token,
        }))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let m = req.into_inner();
        let signed_in = self.gw.login(&m.email, &m.password).await?;
        Ok(Response::new(LoginResponse {
            user: Some(user(&signed_in.user)),
            token: signed_in.token,
        }))
    }

    async fn create_api_key(
        &self,
        req: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let p = principal(&req)?;
        let name = non_empty(req.into_inner().name);
        let created = self
            .gw
            .create_user_api_key(p.account()?, name.as_deref())
            .await?;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(api_key(created.key)),
            key: created.api_key,
        }))
    }

    async fn list_api_keys(
        &self,
        req: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let p = principal(&req)?;
        let keys = self.gw.list_user_api_keys(p.account()?).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key).collect(),
        }))
    }

    async fn get_credentials(
        &self,
        req: Request<GetCredentialsRequest>,
    ) -> Result<Response<GetCredentialsResponse>, Status> {
        let p = principal(&req)?;
        let creds = self.gw.rk_credentials(p.account()?).await?;
        Ok(Response::new(GetCredentialsResponse {
            project_id: creds.project_id.into(),
            api_key_prefix: creds.api_key_prefix,
            api_secret: creds.api_secret.to_string(),
        }))
    }

    async fn rotate_credentials(
        &self,
        req: Request<RotateCredentialsRequest>,
    ) -> Result<Response<RotateCredentialsResponse>, Status> {
        let p = principal(&req)?;
        let account = p.account()?;
        let creds = self.gw.rotate_rk_credentials(account).await?;
        Ok(Response::new(RotateCredentialsResponse {
            project_id: account.project_id.to_string(),
            api_key: creds.api_key,
            api_secret: creds.api_secret,
        }))
    }
}
