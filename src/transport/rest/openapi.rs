//! The OpenAPI 3 document of the REST surfaces: what is common to all of them (info, shared
//! schemas, security schemes, tags) is here; each operation is registered by its surface's
//! `routes()` together with its handler.

use std::sync::Arc;

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::envelope::{ErrorBody, Meta};
use super::rk::{MessageList, SendData, SendForm, SendJson, StatusData};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wagate REST API",
        description = "Two compatible surfaces over the same sessions and messages.\n\n\
            RK Connect (`/api/v1/send`, `/api/v1/status/{id}`, `/api/v1/messages`): every \
            request is signed, X-SIGNATURE = hex HMAC-SHA256(api_secret, X-API-KEY + \
            X-TIMESTAMP + raw_body); the Mekari/Qontak `Authorization: hmac ...` scheme is \
            accepted too.\n\n\
            SAK self-hosted API (`/api/v1/auth`, `/api/v1/sessions`, `/api/v1/messages/*`, \
            `/api/v1/webhooks`): a JWT (`Authorization: Bearer`) or a user API key \
            (`x-api-key`) manages; messaging takes a session API key, or a user API key plus \
            `x-session-id`.\n\n\
            Errors are {\"success\":false,\"message\",\"code\"} with a stable `code`.\n\n\
            Every operation is the transcoding of a gRPC method, named by its `x-grpc-method`."
    ),
    components(schemas(SendJson, SendForm, SendData, StatusData, MessageList, ErrorBody, Meta)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "messages", description = "RK Connect: signed send and status"),
        (name = "auth", description = "SAK: accounts, JWT, API keys, the project's RK credentials"),
        (name = "sessions", description = "SAK: WhatsApp sessions, QR and pairing code"),
        (name = "messages (SAK)", description = "SAK: send through a session, history"),
        (name = "webhooks", description = "signed webhooks, delivery log and replay, inbound media"),
        (name = "broadcasts", description = "templates and their rendering (broadcasts)"),
        (name = "qontak", description = "Qontak-compatible broadcasts API under /qontak/chat/v1, Mekari HMAC signed"),
    )
)]
pub struct ApiDoc;

/// The SAK credentials: a JWT from login, or an API key (user or session).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "a user API key (with x-session-id where a session is meant) or a session API key",
            ))),
        );
        components.add_security_scheme(
            "mekariHmac",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Mekari HMAC: hmac username=\"<api key>\", algorithm=\"hmac-sha256\", \
                 headers=\"date request-line\", signature=\"<base64 HMAC-SHA256(api secret, \
                 'date: ' + Date + '\\n' + METHOD + ' ' + path?query + ' HTTP/1.1')>\", with a Date header",
            ))),
        );
        components.add_security_scheme(
            "operatorToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the operator token, WAGATE_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// The document, made once when the router is built.
pub async fn serve(doc: Arc<utoipa::openapi::OpenApi>) -> impl IntoResponse {
    Json(doc)
}
