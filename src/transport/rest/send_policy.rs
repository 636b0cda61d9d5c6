//! The project's send policy under `/api/v1/send-policy`, SAK style (`{success, data}`,
//! camelCase), transcoded onto `GetSendPolicy` / `UpdateSendPolicy` of
//! `wagate.v1.BroadcastsService`. Same credentials as the other broadcast routes.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{SakManager, secured};
use super::call;
use super::envelope::{ApiResult, ErrorBody, Success, success};
use super::extract::Json;
use crate::domain::Gateway;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::proto::v1::{GetSendPolicyRequest, SendPolicy, UpdateSendPolicyRequest};
use crate::transport::grpc::broadcasts::BroadcastsApi;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new().routes(secured::<SakManager, _>(routes!(get_policy, put_policy)))
}

#[derive(Serialize, Deserialize, Clone, ToSchema)]
pub struct QuietHours {
    /// Local time (the policy's `timeZone`) from which nothing paced is sent, `HH:MM`.
    #[schema(example = "21:00")]
    start: String,
    /// Local time at which sending resumes (before `start`: the next morning).
    #[schema(example = "08:00")]
    end: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyData {
    /// The random gap between two paced messages of a session, from this…
    min_delay_ms: i64,
    /// …to this.
    max_delay_ms: i64,
    /// Paced messages per session and local day (0: no cap).
    daily_cap: i64,
    /// Of those, to numbers the session never talked with (0: no cap).
    new_contact_cap: i64,
    /// A session linked this recently gets `warmupStartPercent` % of both caps on its first
    /// day, rising evenly to 100 % (0: no ramp).
    warmup_days: i32,
    warmup_start_percent: i32,
    /// Null: none.
    quiet_hours: Option<QuietHours>,
    /// The project's time zone as a fixed UTC offset.
    #[schema(example = "+07:00")]
    time_zone: String,
    /// A typing indicator before each paced message, longer for a longer text.
    typing: bool,
    typing_min_ms: i64,
    typing_max_ms: i64,
    /// Pace every outbound message of the project, not only campaigns.
    all_messages: bool,
}

impl From<SendPolicy> for PolicyData {
    fn from(p: SendPolicy) -> Self {
        PolicyData {
            min_delay_ms: p.min_gap_ms,
            max_delay_ms: p.max_gap_ms,
            daily_cap: p.daily_cap,
            new_contact_cap: p.new_contact_cap,
            warmup_days: p.warmup_days,
            warmup_start_percent: p.warmup_start_percent,
            quiet_hours: (!p.quiet_start.is_empty()).then_some(QuietHours {
                start: p.quiet_start,
                end: p.quiet_end,
            }),
            time_zone: p.utc_offset,
            typing: p.typing,
            typing_min_ms: p.typing_min_ms,
            typing_max_ms: p.typing_max_ms,
            all_messages: p.all_messages,
        }
    }
}

/// A field given as `null` (`Some(None)`) apart from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Every field is optional: the ones left out keep their value.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyChange {
    min_delay_ms: Option<i64>,
    max_delay_ms: Option<i64>,
    daily_cap: Option<i64>,
    new_contact_cap: Option<i64>,
    warmup_days: Option<i32>,
    warmup_start_percent: Option<i32>,
    /// `null` turns quiet hours off.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<QuietHours>)]
    quiet_hours: Option<Option<QuietHours>>,
    /// A UTC offset, `+07:00` (time-zone names are not known to the gateway).
    time_zone: Option<String>,
    typing: Option<bool>,
    typing_min_ms: Option<i64>,
    typing_max_ms: Option<i64>,
    all_messages: Option<bool>,
}

fn api(gw: &Gateway) -> BroadcastsApi {
    BroadcastsApi::new(gw.clone())
}

/// The project's send policy (the gateway's defaults until it is changed).
#[utoipa::path(
    get, path = "/api/v1/send-policy", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/GetSendPolicy"))),
    responses((status = 200, body = inline(Success<PolicyData>)), (status = 401, body = ErrorBody))
)]
pub async fn get_policy(State(gw): State<Gateway>, SakManager(p): SakManager) -> ApiResult {
    let r = call::answer(
        api(&gw)
            .get_send_policy(call::request(Some(p), GetSendPolicyRequest {}))
            .await,
    )?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        PolicyData::from(r.policy.unwrap_or_default()),
    ))
}

/// Change the project's send policy: the fields given.
#[utoipa::path(
    put, path = "/api/v1/send-policy", tag = "broadcasts",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/UpdateSendPolicy"))),
    request_body = PolicyChange,
    responses(
        (status = 200, body = inline(Success<PolicyData>)),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody), (status = 401, body = ErrorBody),
    )
)]
pub async fn put_policy(
    State(gw): State<Gateway>,
    SakManager(p): SakManager,
    Json(req): Json<PolicyChange>,
) -> ApiResult {
    let (quiet_start, quiet_end) = match req.quiet_hours {
        None => (None, None),
        Some(None) => (Some(String::new()), Some(String::new())),
        Some(Some(q)) => (Some(q.start), Some(q.end)),
    };
    let msg = UpdateSendPolicyRequest {
        min_gap_ms: req.min_delay_ms,
        max_gap_ms: req.max_delay_ms,
        daily_cap: req.daily_cap,
        new_contact_cap: req.new_contact_cap,
        warmup_days: req.warmup_days,
        warmup_start_percent: req.warmup_start_percent,
        quiet_start,
        quiet_end,
        utc_offset: req.time_zone,
        typing: req.typing,
        typing_min_ms: req.typing_min_ms,
        typing_max_ms: req.typing_max_ms,
        all_messages: req.all_messages,
    };
    let r = call::answer(
        api(&gw)
            .update_send_policy(call::request(Some(p), msg))
            .await,
    )?;
    Ok(success(
        StatusCode::OK,
        gw.node_id(),
        PolicyData::from(r.policy.unwrap_or_default()),
    ))
}
