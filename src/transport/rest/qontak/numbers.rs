//! `POST /broadcasts/contacts` ("validate WhatsApp number"): `{channel_integration_id,
//! phone_numbers:[…]}` answered as `data:{contacts:[{input, status, wa_id}]}` (`valid` /
//! `invalid`, as WhatsApp's Business API answers). Transcoded onto
//! `wagate.v1.BroadcastsService/CheckNumbers`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MAX_JSON_BYTES, Mekari, QontakErrorBody, QontakResult, json_body, ok};
use crate::domain::Gateway;
use crate::proto::v1::CheckNumbersRequest;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::transport::grpc::broadcasts::BroadcastsApi;
use crate::transport::rest::auth::secured;
use crate::transport::rest::call;

type Signed = Mekari<MAX_JSON_BYTES>;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new().routes(secured::<Signed, _>(routes!(check)))
}

#[derive(Deserialize, ToSchema)]
pub struct QontakCheckNumbers {
    /// The session (channel) that asks WhatsApp; absent: the first connected one.
    #[serde(default)]
    channel_integration_id: Option<String>,
    /// At most 500.
    #[schema(example = json!(["6281234567890"]))]
    phone_numbers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct QontakNumber {
    /// The number as given.
    input: String,
    /// valid (on WhatsApp) or invalid.
    #[schema(example = "valid")]
    status: String,
    /// A valid number's WhatsApp id (its digits).
    wa_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct QontakNumberCheck {
    contacts: Vec<QontakNumber>,
}

/// Which numbers are on WhatsApp.
#[utoipa::path(
    post, path = "/qontak/chat/v1/broadcasts/contacts", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CheckNumbers"))),
    request_body = QontakCheckNumbers,
    responses(
        (status = 200, body = inline(super::Ok<QontakNumberCheck>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
        (status = 404, body = QontakErrorBody), (status = 503, body = QontakErrorBody),
    )
)]
pub async fn check(State(gw): State<Gateway>, signed: Signed) -> QontakResult {
    let req: QontakCheckNumbers = json_body(&signed.body)?;
    let msg = CheckNumbersRequest {
        session_id: req.channel_integration_id.unwrap_or_default(),
        phone_numbers: req.phone_numbers,
    };
    let r = call::answer(
        BroadcastsApi::new(gw.clone())
            .check_numbers(call::request(Some(signed.principal), msg))
            .await,
    )?;
    let contacts = r
        .numbers
        .into_iter()
        .map(|n| QontakNumber {
            input: n.input,
            status: n.status,
            wa_id: (!n.wa_id.is_empty()).then_some(n.wa_id),
        })
        .collect();
    Ok(ok(StatusCode::OK, QontakNumberCheck { contacts }))
}
