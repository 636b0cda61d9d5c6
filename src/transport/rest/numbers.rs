//! `POST /api/v1/numbers/check`: which numbers are on WhatsApp, in the SAK style
//! (`{success, data}`, camelCase), transcoded onto `wagate.v1.BroadcastsService/CheckNumbers`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{SakManager, secured};
use super::call;
use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::Json;
use crate::domain::Gateway;
use crate::proto::v1::CheckNumbersRequest;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::transport::grpc::broadcasts::BroadcastsApi;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new().routes(secured::<SakManager, _>(routes!(check)))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckNumbers {
    /// The session that asks WhatsApp; absent: the project's first connected session.
    #[serde(default)]
    session_id: String,
    /// At most 500; digits with country code ("+", spaces and dashes are ignored).
    #[schema(example = json!(["6281234567890"]))]
    phone_numbers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberData {
    /// As given.
    input: String,
    /// valid (on WhatsApp) or invalid.
    #[schema(example = "valid")]
    status: String,
    /// The WhatsApp id of a valid number.
    wa_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NumbersData {
    /// In the order asked.
    numbers: Vec<NumberData>,
}

/// Which numbers are on WhatsApp, asked through one of the project's sessions (answers are
/// cached for 7 days).
#[utoipa::path(
    post, path = "/api/v1/numbers/check", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CheckNumbers"))),
    request_body = CheckNumbers,
    responses(
        (status = 200, body = inline(Success<NumbersData>)),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 503, description = "WHATSAPP_UNAVAILABLE: the session is not connected", body = ErrorBody),
    )
)]
pub async fn check(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Json(req): Json<CheckNumbers>,
) -> ApiResult {
    let msg = CheckNumbersRequest {
        session_id: req.session_id,
        phone_numbers: req.phone_numbers,
    };
    let r = call::answer(
        BroadcastsApi::new(gw.clone())
            .check_numbers(call::request(Some(p), msg))
            .await,
    )?;
    let numbers = r
        .numbers
        .into_iter()
        .map(|n| NumberData {
            input: n.input,
            status: n.status,
            wa_id: (!n.wa_id.is_empty()).then_some(n.wa_id),
        })
        .collect();
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        NumbersData { numbers },
    ))
}
