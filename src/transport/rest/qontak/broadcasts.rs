//! Broadcasts in Qontak's shape: `POST /broadcasts/whatsapp/direct` (one number, values in
//! `parameters.body[].value_text`), `POST /broadcasts/whatsapp` (a contact list, each
//! `parameters.body[].value` a column), `GET /broadcasts/whatsapp`, `GET
//! /broadcasts/{id}/whatsapp` and `GET /broadcasts/{id}/whatsapp/log`, transcoded onto
//! `BroadcastsService`. `channel_integration_id` is a session id (`channel_integration_ids`,
//! a list, spreads the recipients over several). `send_at` (RFC 3339 with offset) schedules.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::templates::{QontakTemplate, qontak_template};
use super::{MAX_GET_BYTES, MAX_JSON_BYTES, Mekari, Page, Paging, QPath, QQuery};
use super::{QontakError, QontakErrorBody, QontakResult, json_body, ok, page, qontak_time};
use crate::domain::Gateway;
use crate::error::Error;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::proto::v1::{
    Broadcast, BroadcastParameters, CreateBroadcastRequest, GetBroadcastRequest,
    ListBroadcastRecipientsRequest, ListBroadcastsRequest,
};
use crate::transport::grpc::broadcasts::BroadcastsApi;
use crate::transport::rest::auth::secured;
use crate::transport::rest::broadcasts::parse_send_at;
use crate::transport::rest::call;

type SignedGet = Mekari<MAX_GET_BYTES>;
type SignedJson = Mekari<MAX_JSON_BYTES>;

pub fn routes() -> OpenApiRouter<Gateway> {
    OpenApiRouter::new()
        .routes(secured::<SignedJson, _>(routes!(direct)))
        .routes(secured::<SignedJson, _>(routes!(bulk)))
        .routes(secured::<SignedGet, _>(routes!(list)))
        .routes(secured::<SignedGet, _>(routes!(get)))
        .routes(secured::<SignedGet, _>(routes!(log)))
}

fn api(gw: &Gateway) -> BroadcastsApi {
    BroadcastsApi::new(gw.clone())
}

/// `{"code": "id"}`.
#[derive(Deserialize, Default, ToSchema)]
pub struct Language {
    #[serde(default)]
    code: String,
}

#[derive(Deserialize, ToSchema)]
pub struct BodyParam {
    /// The placeholder number, as a string or an integer.
    #[schema(value_type = String, example = "1")]
    key: Value,
    /// A label (direct), or the contact-list column (bulk).
    #[serde(default)]
    value: String,
    /// Direct: the text put in.
    #[serde(default)]
    value_text: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize, ToSchema)]
pub struct HeaderParam {
    /// IMAGE, VIDEO or DOCUMENT.
    #[serde(default)]
    format: String,
    /// `[{key:"url",value}, {key:"filename",value}]`.
    #[serde(default)]
    params: Vec<KeyValue>,
}

#[derive(Deserialize, ToSchema)]
pub struct ButtonParam {
    #[schema(value_type = String, example = "0")]
    index: Value,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct SendParameters {
    #[serde(default)]
    body: Vec<BodyParam>,
    #[serde(default)]
    header: Option<HeaderParam>,
    #[serde(default)]
    buttons: Vec<ButtonParam>,
}

#[derive(Deserialize, ToSchema)]
pub struct SendRequest {
    /// Direct: the number.
    #[serde(default)]
    to_number: Option<String>,
    #[serde(default)]
    to_name: Option<String>,
    /// Bulk: the contact list.
    #[serde(default)]
    contact_list_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    message_template_id: String,
    /// The session (channel) to send through.
    #[serde(default)]
    channel_integration_id: Option<String>,
    /// Several sessions: recipients are spread over them.
    #[serde(default)]
    channel_integration_ids: Vec<String>,
    #[serde(default)]
    language: Option<Language>,
    #[serde(default)]
    parameters: SendParameters,
    /// RFC 3339 with offset; absent or past: now.
    #[serde(default)]
    send_at: Option<String>,
    /// wagate: this campaign's pacing (else the project's send policy).
    #[serde(default)]
    pacing: Option<QontakPacing>,
    /// wagate: check each number on WhatsApp first; those not on it fail with
    /// `NOT_ON_WHATSAPP`.
    #[serde(default)]
    skip_unregistered: bool,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct QontakPacing {
    min_delay_ms: Option<i64>,
    max_delay_ms: Option<i64>,
    daily_cap: Option<i64>,
}

fn key_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The request as the native call: body values (direct) or columns (bulk) by key order.
fn native(req: SendRequest, bulk: bool) -> Result<CreateBroadcastRequest, QontakError> {
    let mut body: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for p in req.parameters.body {
        let key = key_number(&p.key).ok_or_else(|| {
            Error::InvalidRequest("parameters.body[].key must be a placeholder number".into())
        })?;
        let value = if bulk {
            p.value.clone()
        } else {
            p.value_text.clone().unwrap_or_default()
        };
        body.insert(key, (value, p.value));
    }
    let (mut media_url, mut filename) = (String::new(), String::new());
    if let Some(h) = req.parameters.header {
        let _ = h.format;
        for kv in h.params {
            match kv.key.as_str() {
                "url" => media_url = kv.value,
                "filename" => filename = kv.value,
                _ => {}
            }
        }
    }
    let mut buttons = std::collections::HashMap::new();
    for b in req.parameters.buttons {
        let _ = b.kind;
        let index = key_number(&b.index).ok_or_else(|| {
            Error::InvalidRequest("parameters.buttons[].index must be a number".into())
        })?;
        buttons.insert(index as u32, b.value);
    }
    let mut sessions = req.channel_integration_ids;
    if let Some(s) = req.channel_integration_id.filter(|s| !s.is_empty()) {
        sessions.insert(0, s);
    }
    Ok(CreateBroadcastRequest {
        name: req.name.unwrap_or_default(),
        template_id: req.message_template_id,
        language: req.language.unwrap_or_default().code,
        session_ids: sessions,
        to_number: if bulk {
            String::new()
        } else {
            req.to_number.unwrap_or_default()
        },
        to_name: req.to_name.unwrap_or_default(),
        contact_list_id: if bulk {
            req.contact_list_id.unwrap_or_default()
        } else {
            String::new()
        },
        parameters: Some(BroadcastParameters {
            labels: body.values().map(|(_, label)| label.clone()).collect(),
            body: body.into_values().map(|(v, _)| v).collect(),
            header: Vec::new(),
            buttons,
            media_url,
            filename,
        }),
        send_at: parse_send_at(req.send_at.as_deref()).map_err(QontakError::from)?,
        pacing_min_ms: req.pacing.as_ref().and_then(|p| p.min_delay_ms),
        pacing_max_ms: req.pacing.as_ref().and_then(|p| p.max_delay_ms),
        daily_cap: req.pacing.as_ref().and_then(|p| p.daily_cap),
        skip_unregistered: req.skip_unregistered,
    })
}

#[derive(Serialize, ToSchema)]
pub struct StatusCount {
    failed: i64,
    delivered: i64,
    read: i64,
    pending: i64,
    sent: i64,
}

#[derive(Serialize, ToSchema)]
pub struct QontakBroadcast {
    id: String,
    name: String,
    /// The project id.
    organization_id: String,
    /// The (first) session.
    channel_integration_id: String,
    contact_list_id: Option<String>,
    contact_id: Option<String>,
    #[schema(example = "wa")]
    target_channel: String,
    send_at: Option<String>,
    /// todo (scheduled), processing, paused, done, cancelled.
    execute_status: String,
    /// immediately or specific.
    execute_type: String,
    /// `{"header":{…},"body":{"1":"<label>"},"buttons":{…}}`.
    #[schema(value_type = Object)]
    parameters: Value,
    created_at: Option<String>,
    message_status_count: StatusCount,
    message_template: Option<QontakTemplate>,
    /// Direct: each label with the text put in.
    #[schema(value_type = Object)]
    contact_extra: Value,
    division_id: Option<String>,
    /// "n/a" when nothing went wrong.
    message_broadcast_error: String,
    sender_name: Option<String>,
    sender_email: Option<String>,
    channel_account_name: Option<String>,
    channel_phone_number: Option<String>,
    message_broadcast_plan_id: Option<String>,
    /// wagate: scheduled, running, paused, completed, cancelled.
    state: String,
    recipients_total: i64,
    /// wagate: numbers not on WhatsApp are skipped (`NOT_ON_WHATSAPP`).
    skip_unregistered: bool,
    /// wagate: why it is not sending right now (null when it is).
    waiting_reason: Option<String>,
    /// wagate: estimated finish, null when paused, finished or no session is healthy.
    eta: Option<String>,
}

fn execute_status(state: &str) -> &'static str {
    match state {
        "scheduled" => "todo",
        "running" => "processing",
        "paused" => "paused",
        "completed" => "done",
        _ => "cancelled",
    }
}

fn qontak_broadcast(b: Broadcast, project_id: &str) -> QontakBroadcast {
    let c = b.counts.unwrap_or_default();
    let p = b.parameters.unwrap_or_default();
    let direct = b.kind == "direct";
    let labels: Map<String, Value> = p
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| ((i + 1).to_string(), Value::String(l.clone())))
        .collect();
    let body: Map<String, Value> = if direct {
        labels
    } else {
        p.body
            .iter()
            .enumerate()
            .map(|(i, col)| ((i + 1).to_string(), Value::String(col.clone())))
            .collect()
    };
    let header = if p.media_url.is_empty() {
        json!({})
    } else {
        json!({"params": {"url": p.media_url, "filename": p.filename}})
    };
    let buttons: Map<String, Value> = p
        .buttons
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    let extra: Map<String, Value> = if direct {
        p.labels
            .iter()
            .zip(&p.body)
            .filter(|(l, _)| !l.is_empty())
            .map(|(l, v)| (l.clone(), Value::String(v.clone())))
            .collect()
    } else {
        Map::new()
    };
    QontakBroadcast {
        id: b.broadcast_id,
        name: b.name,
        organization_id: project_id.to_owned(),
        channel_integration_id: b.session_ids.first().cloned().unwrap_or_default(),
        contact_list_id: (!b.contact_list_id.is_empty()).then_some(b.contact_list_id),
        contact_id: None,
        target_channel: "wa".into(),
        send_at: qontak_time(b.send_at),
        execute_status: execute_status(&b.state).into(),
        execute_type: b.execute_type,
        parameters: json!({"header": header, "body": body, "buttons": buttons}),
        created_at: qontak_time(b.created_at),
        message_status_count: StatusCount {
            failed: c.failed + c.cancelled,
            delivered: c.delivered,
            read: c.read,
            pending: c.pending,
            sent: c.sent,
        },
        message_template: b.template.map(|t| qontak_template(t, project_id)),
        contact_extra: Value::Object(extra),
        division_id: None,
        message_broadcast_error: "n/a".into(),
        sender_name: None,
        sender_email: None,
        channel_account_name: None,
        channel_phone_number: None,
        message_broadcast_plan_id: None,
        state: b.state,
        skip_unregistered: b.skip_unregistered,
        recipients_total: b.recipients_total,
        waiting_reason: (!b.waiting_reason.is_empty()).then_some(b.waiting_reason),
        eta: qontak_time(b.eta),
    }
}

async fn create(gw: &Gateway, signed: SignedJson, bulk: bool) -> QontakResult {
    let req: SendRequest = json_body(&signed.body)?;
    let project = signed.principal.caller().project.row.id.to_string();
    let msg = native(req, bulk)?;
    let r = call::answer(
        api(gw)
            .create_broadcast(call::request(Some(signed.principal), msg))
            .await,
    )?;
    Ok(ok(
        StatusCode::CREATED,
        qontak_broadcast(r.broadcast.unwrap_or_default(), &project),
    ))
}

/// Send a template to one number.
#[utoipa::path(
    post, path = "/qontak/chat/v1/broadcasts/whatsapp/direct", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CreateBroadcast"))),
    request_body = SendRequest,
    responses(
        (status = 201, body = inline(super::Ok<QontakBroadcast>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
        (status = 404, body = QontakErrorBody),
        (status = 422, description = "Message Template has N variable, please adjust your payload.", body = QontakErrorBody),
    )
)]
pub async fn direct(State(gw): State<Gateway>, signed: SignedJson) -> QontakResult {
    create(&gw, signed, false).await
}

/// Send a template to every contact of a list.
#[utoipa::path(
    post, path = "/qontak/chat/v1/broadcasts/whatsapp", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/CreateBroadcast"))),
    request_body = SendRequest,
    responses(
        (status = 201, body = inline(super::Ok<QontakBroadcast>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
        (status = 404, body = QontakErrorBody), (status = 422, body = QontakErrorBody),
    )
)]
pub async fn bulk(State(gw): State<Gateway>, signed: SignedJson) -> QontakResult {
    create(&gw, signed, true).await
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// The page, from 1.
    offset: Option<String>,
    /// Page size (default 10, at most 100).
    limit: Option<i64>,
}

/// The project's broadcasts, newest first.
#[utoipa::path(
    get, path = "/qontak/chat/v1/broadcasts/whatsapp", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListBroadcasts"))),
    params(ListParams),
    responses(
        (status = 200, body = inline(Page<QontakBroadcast>)),
        (status = 400, body = QontakErrorBody), (status = 401, body = QontakErrorBody),
    )
)]
pub async fn list(
    State(gw): State<Gateway>,
    QQuery(q): QQuery<ListParams>,
    signed: SignedGet,
) -> QontakResult {
    let paging = Paging::new(q.offset.as_deref(), q.limit)?;
    let project = signed.principal.caller().project.row.id.to_string();
    let msg = ListBroadcastsRequest {
        page_size: paging.limit as i32,
        page_token: paging.skip().to_string(),
    };
    let r = call::answer(
        api(&gw)
            .list_broadcasts(call::request(Some(signed.principal), msg))
            .await,
    )?;
    let data = r
        .broadcasts
        .into_iter()
        .map(|b| qontak_broadcast(b, &project))
        .collect();
    Ok(page(data, paging, r.total))
}

/// One broadcast.
#[utoipa::path(
    get, path = "/qontak/chat/v1/broadcasts/{id}/whatsapp", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/GetBroadcast"))),
    params(("id" = String, Path, description = "broadcast id")),
    responses(
        (status = 200, body = inline(super::Ok<QontakBroadcast>)),
        (status = 401, body = QontakErrorBody), (status = 404, description = "BROADCAST_NOT_FOUND", body = QontakErrorBody),
    )
)]
pub async fn get(
    State(gw): State<Gateway>,
    QPath(id): QPath<String>,
    signed: SignedGet,
) -> QontakResult {
    let project = signed.principal.caller().project.row.id.to_string();
    let msg = GetBroadcastRequest { broadcast_id: id };
    let r = call::answer(
        api(&gw)
            .get_broadcast(call::request(Some(signed.principal), msg))
            .await,
    )?;
    Ok(ok(
        StatusCode::OK,
        qontak_broadcast(r.broadcast.unwrap_or_default(), &project),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct LogEntry {
    /// `<broadcast id>-<recipient number>`.
    id: String,
    organization_id: String,
    messages_broadcast_id: String,
    contact_phone_number: String,
    contact_full_name: String,
    /// created, pending, sent, delivered, read, replied, failed.
    status: String,
    /// The WhatsApp (Web) message id, once sent.
    whatsapp_message_id: Option<String>,
    /// "n/a" when nothing went wrong; else `<CODE>: <message>`.
    whatsapp_error_message: String,
    #[schema(value_type = Object)]
    messages_response: Value,
    #[schema(value_type = Object)]
    messages: Value,
    created_at: Option<String>,
    /// Held back (pacing, a rate limit) for now.
    is_pacing: bool,
    channel_integration_id: String,
    sent_at: Option<String>,
    delivered_at: Option<String>,
    read_at: Option<String>,
    failed_at: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct LogParams {
    /// The page, from 1.
    offset: Option<String>,
    /// Page size (default 10, at most 100).
    limit: Option<i64>,
    /// Accepted and ignored.
    filters: Option<String>,
}

/// The per-recipient log of a broadcast.
#[utoipa::path(
    get, path = "/qontak/chat/v1/broadcasts/{id}/whatsapp/log", tag = "qontak",
    extensions(("x-grpc-method" = json!("wagate.v1.BroadcastsService/ListBroadcastRecipients"))),
    params(("id" = String, Path, description = "broadcast id"), LogParams),
    responses(
        (status = 200, body = inline(Page<LogEntry>)),
        (status = 401, body = QontakErrorBody), (status = 404, body = QontakErrorBody),
    )
)]
pub async fn log(
    State(gw): State<Gateway>,
    QPath(id): QPath<String>,
    QQuery(q): QQuery<LogParams>,
    signed: SignedGet,
) -> QontakResult {
    let _ = q.filters;
    let paging = Paging::new(q.offset.as_deref(), q.limit)?;
    let project = signed.principal.caller().project.row.id.to_string();
    let msg = ListBroadcastRecipientsRequest {
        broadcast_id: id.clone(),
        page_size: paging.limit as i32,
        // Recipients are numbered from 1 without gaps: a page starts after the ones before.
        page_token: paging.skip().to_string(),
    };
    let r = call::answer(
        api(&gw)
            .list_broadcast_recipients(call::request(Some(signed.principal), msg))
            .await,
    )?;
    let data = r
        .recipients
        .into_iter()
        .map(|x| {
            let error = match (x.error_code.is_empty(), x.error_message.is_empty()) {
                (true, true) => "n/a".to_owned(),
                (false, false) => format!("{}: {}", x.error_code, x.error_message),
                _ => format!("{}{}", x.error_code, x.error_message),
            };
            LogEntry {
                id: format!("{id}-{}", x.seq),
                organization_id: project.clone(),
                messages_broadcast_id: id.clone(),
                contact_phone_number: x.phone_number,
                contact_full_name: x.full_name,
                status: if x.status == "cancelled" {
                    "failed".into()
                } else {
                    x.status
                },
                whatsapp_message_id: (!x.wa_message_id.is_empty()).then_some(x.wa_message_id),
                whatsapp_error_message: error,
                messages_response: json!({}),
                messages: json!({}),
                created_at: qontak_time(x.created_at),
                is_pacing: !x.held_reason.is_empty(),
                channel_integration_id: x.session_id,
                sent_at: qontak_time(x.sent_at),
                delivered_at: qontak_time(x.delivered_at),
                read_at: qontak_time(x.read_at),
                failed_at: qontak_time(x.failed_at),
            }
        })
        .collect();
    Ok(page(data, paging, r.total))
}
