//! The OpenAPI 3 document of the REST surface, generated from the handlers' annotations.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::envelope::{ErrorBody, Meta};
use super::messaging::{MessageList, SendData, SendForm, SendJson, StatusData};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wagate REST API",
        description = "RK Connect compatible messaging API. Every request is signed: \
            X-SIGNATURE = hex HMAC-SHA256(api_secret, X-API-KEY + X-TIMESTAMP + raw_body); \
            the Mekari/Qontak `Authorization: hmac ...` scheme is accepted too. \
            Errors are {\"success\":false,\"message\",\"code\"}."
    ),
    paths(super::messaging::send, super::messaging::status, super::messaging::list),
    components(schemas(SendJson, SendForm, SendData, StatusData, MessageList, ErrorBody, Meta)),
    tags((name = "messages", description = "outbound messages"))
)]
pub struct ApiDoc;

pub async fn serve() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
