//! `wagate.v1.BroadcastsService` over the service layer: templates and the render preview,
//! contact lists, suppressions.

use bytes::Bytes;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::auth::principal;
use super::convert::millis;
use super::convert::timestamp;
use crate::domain::Gateway;
use crate::domain::broadcasts::campaigns::{
    BroadcastAction, BroadcastSpec, BroadcastView, Mapping, Pacing, RecipientView, Target,
};
use crate::domain::broadcasts::contacts::{ContactListView, Spooled, spool};
use crate::domain::broadcasts::model::{
    Button, ButtonKind, Header, HeaderFormat, TemplateSpec, Variant,
};
use crate::domain::broadcasts::render::Params;
use crate::domain::broadcasts::suppressions::SuppressionView;
use crate::domain::broadcasts::templates::TemplateView;
use crate::domain::principal::Principal;
use crate::error::Error;
use crate::proto::v1::broadcasts_service_server::BroadcastsService;
use crate::proto::v1::*;
use crate::values::{BroadcastId, ContactListId, TemplateId};

/// Templates per page when a request names no size.
const DEFAULT_PAGE: i64 = 20;

pub struct BroadcastsApi {
    gw: Gateway,
}

impl BroadcastsApi {
    pub fn new(gw: Gateway) -> Self {
        BroadcastsApi { gw }
    }
}

pub(crate) fn template(v: TemplateView) -> Template {
    Template {
        template_id: v.id.into(),
        name: v.name,
        category: v.category,
        status: v.status,
        variants: v.variants.into_iter().map(variant_to_proto).collect(),
        created_at: Some(timestamp(v.created_at)),
        updated_at: Some(timestamp(v.updated_at)),
    }
}

fn variant_to_proto(v: Variant) -> TemplateVariant {
    TemplateVariant {
        language: v.language,
        header: v.header.map(|h| TemplateHeader {
            format: h.format.as_str().into(),
            text: h.text,
            media_url: h.media_url,
        }),
        body: v.body,
        footer: v.footer,
        buttons: v
            .buttons
            .into_iter()
            .map(|b| TemplateButton {
                r#type: b.kind.as_str().into(),
                text: b.text,
                url: b.url,
                phone_number: b.phone_number,
            })
            .collect(),
    }
}

fn variant_from_proto(v: TemplateVariant) -> Result<Variant, Error> {
    let header = match v.header {
        Some(h) if !(h.format.is_empty() && h.text.is_empty() && h.media_url.is_empty()) => {
            let format = if h.format.is_empty() && !h.text.is_empty() {
                HeaderFormat::Text
            } else {
                HeaderFormat::parse(&h.format)?
            };
            Some(Header {
                format,
                text: h.text,
                media_url: h.media_url,
            })
        }
        _ => None,
    };
    let buttons = v
        .buttons
        .into_iter()
        .map(|b| {
            Ok(Button {
                kind: ButtonKind::parse(&b.r#type)?,
                text: b.text,
                url: b.url,
                phone_number: b.phone_number,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Variant {
        language: v.language,
        header,
        body: v.body,
        footer: v.footer,
        buttons,
    })
}

pub(crate) fn spec(
    name: String,
    category: String,
    variants: Vec<TemplateVariant>,
) -> Result<TemplateSpec, Error> {
    Ok(TemplateSpec {
        name,
        category,
        variants: variants
            .into_iter()
            .map(variant_from_proto)
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn params(p: Option<TemplateParameters>) -> Params {
    let p = p.unwrap_or_default();
    Params {
        body: p.body,
        header: p.header,
        buttons: p
            .buttons
            .into_iter()
            .map(|(k, v)| (k as usize, v))
            .collect(),
        media_url: p.media_url,
        filename: p.filename,
    }
}

pub(crate) fn contact_list(v: ContactListView) -> ContactList {
    ContactList {
        contact_list_id: v.id.into(),
        name: v.name,
        source_type: v.source_type,
        progress: v.progress,
        rows_total: v.rows_total,
        accepted: v.accepted,
        rejected: v.rejected,
        duplicates: v.duplicates,
        variables: v.variables,
        error_message: v.error_message.unwrap_or_default(),
        rejections: v
            .rejections
            .into_iter()
            .map(|(row, phone_number, reason)| ContactListRejection {
                row,
                phone_number,
                reason,
            })
            .collect(),
        created_at: Some(timestamp(v.created_at)),
        updated_at: Some(timestamp(v.updated_at)),
        finished_at: v.finished_at.map(timestamp),
    }
}

fn mapping_to_proto(m: Mapping) -> BroadcastParameters {
    BroadcastParameters {
        body: m.body,
        header: m.header,
        buttons: m.buttons.into_iter().map(|(k, v)| (k as u32, v)).collect(),
        media_url: m.media_url,
        filename: m.filename,
        labels: m.labels,
    }
}

pub(crate) fn broadcast(v: BroadcastView) -> Broadcast {
    let r = v.row;
    let c = v.counts;
    let skip_unregistered = v.mapping.skip_unregistered;
    Broadcast {
        broadcast_id: r.id.into(),
        name: r.name,
        template_id: r.template_id,
        language: r.language,
        kind: r.kind,
        contact_list_id: r.contact_list_id.unwrap_or_default(),
        session_ids: v.session_ids,
        parameters: Some(mapping_to_proto(v.mapping)),
        state: r.state,
        execute_type: r.execute_type,
        send_at: Some(timestamp(r.send_at)),
        recipients_total: r.recipients_total,
        counts: Some(BroadcastCounts {
            created: c.created,
            pending: c.pending,
            sent: c.sent,
            delivered: c.delivered,
            read: c.read,
            failed: c.failed,
            cancelled: c.cancelled,
            replied: c.replied,
        }),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        started_at: r.started_at.map(timestamp),
        finished_at: r.finished_at.map(timestamp),
        template: v.template.map(template),
        pacing_min_ms: r.pacing_min_ms,
        pacing_max_ms: r.pacing_max_ms,
        daily_cap: r.daily_cap,
        skip_unregistered,
        waiting_reason: v.waiting_reason.unwrap_or_default(),
        eta: v.eta.map(timestamp),
    }
}

fn recipient(v: RecipientView) -> BroadcastRecipient {
    BroadcastRecipient {
        seq: v.seq,
        phone_number: v.phone,
        full_name: v.full_name,
        status: v.status.into(),
        session_id: v.session_id,
        message_id: v.message_id.unwrap_or_default(),
        wa_message_id: v.wa_message_id.unwrap_or_default(),
        error_code: v.error_code.unwrap_or_default(),
        error_message: v.error_message.unwrap_or_default(),
        held_reason: v.held.unwrap_or_default(),
        created_at: Some(timestamp(v.created_at)),
        updated_at: Some(timestamp(v.updated_at)),
        sent_at: v.sent_at.map(timestamp),
        delivered_at: v.delivered_at.map(timestamp),
        read_at: v.read_at.map(timestamp),
        failed_at: v.failed_at.map(timestamp),
    }
}

fn suppression(v: SuppressionView) -> Suppression {
    Suppression {
        phone_number: v.phone,
        reason: v.reason,
        detail: v.detail.unwrap_or_default(),
        created_at: Some(timestamp(v.created_at)),
    }
}

fn page_size(size: i32, default: i64) -> i64 {
    if size <= 0 { default } else { i64::from(size) }
}

fn next_token(skip: i64, got: usize, total: i64) -> String {
    let end = skip + got as i64;
    if end < total {
        end.to_string()
    } else {
        String::new()
    }
}

impl BroadcastsApi {
    /// `ImportContactList` once its stream is on disk: the REST surfaces spool their
    /// multipart file part ([`spool`]) and call this, as the gRPC method does with its chunks.
    pub async fn import_contact_list_from(
        &self,
        principal: &Principal,
        name: &str,
        source_type: &str,
        upload: Spooled,
    ) -> Result<ContactList, Error> {
        let c = principal.manager()?;
        let list = self
            .gw
            .import_contact_list(c, name, source_type, upload)
            .await?;
        Ok(contact_list(list))
    }
}

/// A page token is the number of templates before the page.
fn skip_of(token: &str) -> Result<i64, Error> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::InvalidRequest("page_token is not one this server gave".into()))
}

#[tonic::async_trait]
impl BroadcastsService for BroadcastsApi {
    async fn create_template(
        &self,
        req: Request<CreateTemplateRequest>,
    ) -> Result<Response<CreateTemplateResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let t = self
            .gw
            .create_template(c, spec(m.name, m.category, m.variants)?)
            .await?;
        Ok(Response::new(CreateTemplateResponse {
            template: Some(template(t)),
        }))
    }

    async fn list_templates(
        &self,
        req: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.get_ref();
        let skip = skip_of(&m.page_token)?;
        let limit = page_size(m.page_size, DEFAULT_PAGE);
        let page = self
            .gw
            .list_templates(c, Some(m.query.as_str()), skip, limit)
            .await?;
        Ok(Response::new(ListTemplatesResponse {
            next_page_token: next_token(skip, page.templates.len(), page.total),
            total: page.total,
            templates: page.templates.into_iter().map(template).collect(),
        }))
    }

    async fn get_template(
        &self,
        req: Request<GetTemplateRequest>,
    ) -> Result<Response<GetTemplateResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let id = TemplateId::from(req.get_ref().template_id.as_str());
        let t = self.gw.get_template(c, &id).await?;
        Ok(Response::new(GetTemplateResponse {
            template: Some(template(t)),
        }))
    }

    async fn update_template(
        &self,
        req: Request<UpdateTemplateRequest>,
    ) -> Result<Response<UpdateTemplateResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let id = TemplateId::from(m.template_id);
        let t = self
            .gw
            .update_template(c, &id, spec(m.name, m.category, m.variants)?)
            .await?;
        Ok(Response::new(UpdateTemplateResponse {
            template: Some(template(t)),
        }))
    }

    async fn delete_template(
        &self,
        req: Request<DeleteTemplateRequest>,
    ) -> Result<Response<DeleteTemplateResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let id = TemplateId::from(req.get_ref().template_id.as_str());
        self.gw.delete_template(c, &id).await?;
        Ok(Response::new(DeleteTemplateResponse {}))
    }

    async fn render_template(
        &self,
        req: Request<RenderTemplateRequest>,
    ) -> Result<Response<RenderTemplateResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let id = TemplateId::from(m.template_id);
        let r = self
            .gw
            .render_template(c, &id, &m.language, &params(m.parameters))
            .await?;
        let media = r
            .media
            .unwrap_or_else(|| crate::domain::broadcasts::render::MediaHeader {
                format: HeaderFormat::Text,
                url: String::new(),
                filename: String::new(),
            });
        Ok(Response::new(RenderTemplateResponse {
            language: r.language,
            text: r.text,
            media_format: if media.url.is_empty() {
                String::new()
            } else {
                media.format.as_str().into()
            },
            media_url: media.url,
            filename: media.filename,
        }))
    }

    async fn import_contact_list(
        &self,
        req: Request<Streaming<ImportContactListRequest>>,
    ) -> Result<Response<ImportContactListResponse>, Status> {
        let p = principal(&req)?;
        p.manager()?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Error::InvalidRequest("the first message names the list".into()))?;
        let chunks = futures::stream::once(async move { Ok(Bytes::from(first.chunk)) })
            .chain(stream.map(|m| {
                m.map(|m| Bytes::from(m.chunk))
                    .map_err(|s| Error::InvalidRequest(format!("upload stream: {}", s.message())))
            }))
            .boxed();
        let upload = spool(chunks).await?;
        let list = self
            .import_contact_list_from(&p, &first.name, &first.source_type, upload)
            .await?;
        Ok(Response::new(ImportContactListResponse {
            contact_list: Some(list),
        }))
    }

    async fn list_contact_lists(
        &self,
        req: Request<ListContactListsRequest>,
    ) -> Result<Response<ListContactListsResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.get_ref();
        let skip = skip_of(&m.page_token)?;
        let (lists, total) = self
            .gw
            .list_contact_lists(c, skip, page_size(m.page_size, DEFAULT_PAGE))
            .await?;
        Ok(Response::new(ListContactListsResponse {
            next_page_token: next_token(skip, lists.len(), total),
            total,
            contact_lists: lists.into_iter().map(contact_list).collect(),
        }))
    }

    async fn get_contact_list(
        &self,
        req: Request<GetContactListRequest>,
    ) -> Result<Response<GetContactListResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let id = ContactListId::from(req.get_ref().contact_list_id.as_str());
        let list = self.gw.get_contact_list(c, &id).await?;
        Ok(Response::new(GetContactListResponse {
            contact_list: Some(contact_list(list)),
        }))
    }

    async fn list_suppressions(
        &self,
        req: Request<ListSuppressionsRequest>,
    ) -> Result<Response<ListSuppressionsResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.get_ref();
        let limit = page_size(m.page_size, 100);
        let (rows, total) = self.gw.list_suppressions(c, &m.page_token, limit).await?;
        let next_page_token = if rows.len() as i64 == limit {
            rows.last().map(|r| r.phone.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListSuppressionsResponse {
            suppressions: rows.into_iter().map(suppression).collect(),
            next_page_token,
            total,
        }))
    }

    async fn add_suppression(
        &self,
        req: Request<AddSuppressionRequest>,
    ) -> Result<Response<AddSuppressionResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.get_ref();
        let s = self
            .gw
            .add_suppression(c, &m.phone_number, Some(m.note.as_str()))
            .await?;
        Ok(Response::new(AddSuppressionResponse {
            suppression: Some(suppression(s)),
        }))
    }

    async fn remove_suppression(
        &self,
        req: Request<RemoveSuppressionRequest>,
    ) -> Result<Response<RemoveSuppressionResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        self.gw
            .remove_suppression(c, &req.get_ref().phone_number)
            .await?;
        Ok(Response::new(RemoveSuppressionResponse {}))
    }

    async fn create_broadcast(
        &self,
        req: Request<CreateBroadcastRequest>,
    ) -> Result<Response<CreateBroadcastResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let target = match (m.to_number.is_empty(), m.contact_list_id.is_empty()) {
            (false, true) => Target::Direct {
                phone: m.to_number,
                name: m.to_name,
            },
            (true, false) => Target::List {
                contact_list_id: ContactListId::from(m.contact_list_id),
            },
            _ => {
                return Err(Error::InvalidRequest(
                    "give either to_number (direct) or contact_list_id".into(),
                )
                .into());
            }
        };
        let params = m.parameters.unwrap_or_default();
        let spec = BroadcastSpec {
            name: m.name,
            template_id: TemplateId::from(m.template_id),
            language: m.language,
            session_ids: m.session_ids,
            target,
            mapping: Mapping {
                body: params.body,
                header: params.header,
                buttons: params
                    .buttons
                    .into_iter()
                    .map(|(k, v)| (k as usize, v))
                    .collect(),
                media_url: params.media_url,
                filename: params.filename,
                labels: params.labels,
                skip_unregistered: m.skip_unregistered,
            },
            send_at: m.send_at.as_ref().map(millis),
            pacing: Pacing {
                min_ms: m.pacing_min_ms,
                max_ms: m.pacing_max_ms,
                daily_cap: m.daily_cap,
            },
        };
        let b = self.gw.create_broadcast(c, spec).await?;
        Ok(Response::new(CreateBroadcastResponse {
            broadcast: Some(broadcast(b)),
        }))
    }

    async fn list_broadcasts(
        &self,
        req: Request<ListBroadcastsRequest>,
    ) -> Result<Response<ListBroadcastsResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.get_ref();
        let skip = skip_of(&m.page_token)?;
        let (rows, total) = self
            .gw
            .list_broadcasts(c, skip, page_size(m.page_size, DEFAULT_PAGE))
            .await?;
        Ok(Response::new(ListBroadcastsResponse {
            next_page_token: next_token(skip, rows.len(), total),
            total,
            broadcasts: rows.into_iter().map(broadcast).collect(),
        }))
    }

    async fn get_broadcast(
        &self,
        req: Request<GetBroadcastRequest>,
    ) -> Result<Response<GetBroadcastResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let id = BroadcastId::from(req.get_ref().broadcast_id.as_str());
        let b = self.gw.get_broadcast(c, &id).await?;
        Ok(Response::new(GetBroadcastResponse {
            broadcast: Some(broadcast(b)),
        }))
    }

    async fn list_broadcast_recipients(
        &self,
        req: Request<ListBroadcastRecipientsRequest>,
    ) -> Result<Response<ListBroadcastRecipientsResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.get_ref();
        let after = skip_of(&m.page_token)?;
        let limit = page_size(m.page_size, 100);
        let id = BroadcastId::from(m.broadcast_id.as_str());
        let (rows, total) = self.gw.broadcast_log(c, &id, after, limit).await?;
        let next_page_token = match rows.last() {
            Some(r) if (rows.len() as i64) == limit && r.seq < total => r.seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListBroadcastRecipientsResponse {
            recipients: rows.into_iter().map(recipient).collect(),
            next_page_token,
            total,
        }))
    }

    async fn pause_broadcast(
        &self,
        req: Request<PauseBroadcastRequest>,
    ) -> Result<Response<PauseBroadcastResponse>, Status> {
        let p = principal(&req)?;
        let id = BroadcastId::from(req.get_ref().broadcast_id.as_str());
        let b = self
            .gw
            .change_broadcast(p.manager()?, &id, BroadcastAction::Pause)
            .await?;
        Ok(Response::new(PauseBroadcastResponse {
            broadcast: Some(broadcast(b)),
        }))
    }

    async fn resume_broadcast(
        &self,
        req: Request<ResumeBroadcastRequest>,
    ) -> Result<Response<ResumeBroadcastResponse>, Status> {
        let p = principal(&req)?;
        let id = BroadcastId::from(req.get_ref().broadcast_id.as_str());
        let b = self
            .gw
            .change_broadcast(p.manager()?, &id, BroadcastAction::Resume)
            .await?;
        Ok(Response::new(ResumeBroadcastResponse {
            broadcast: Some(broadcast(b)),
        }))
    }

    async fn cancel_broadcast(
        &self,
        req: Request<CancelBroadcastRequest>,
    ) -> Result<Response<CancelBroadcastResponse>, Status> {
        let p = principal(&req)?;
        let id = BroadcastId::from(req.get_ref().broadcast_id.as_str());
        let b = self
            .gw
            .change_broadcast(p.manager()?, &id, BroadcastAction::Cancel)
            .await?;
        Ok(Response::new(CancelBroadcastResponse {
            broadcast: Some(broadcast(b)),
        }))
    }

    async fn check_numbers(
        &self,
        req: Request<CheckNumbersRequest>,
    ) -> Result<Response<CheckNumbersResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let m = req.into_inner();
        let checked = self
            .gw
            .check_numbers(c, &m.session_id, m.phone_numbers)
            .await?;
        let numbers = checked
            .into_iter()
            .map(|n| {
                let valid = n.on_whatsapp;
                NumberStatus {
                    input: n.input,
                    status: if valid { "valid" } else { "invalid" }.into(),
                    wa_id: n.phone.filter(|_| valid).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(CheckNumbersResponse { numbers }))
    }

    async fn get_send_policy(
        &self,
        req: Request<GetSendPolicyRequest>,
    ) -> Result<Response<GetSendPolicyResponse>, Status> {
        let p = principal(&req)?;
        let policy = self.gw.send_policy(p.manager()?).await?;
        Ok(Response::new(GetSendPolicyResponse {
            policy: Some(super::send_policy::to_proto(policy)),
        }))
    }

    async fn update_send_policy(
        &self,
        req: Request<UpdateSendPolicyRequest>,
    ) -> Result<Response<UpdateSendPolicyResponse>, Status> {
        let p = principal(&req)?;
        let c = p.manager()?;
        let patch = super::send_policy::patch(req.into_inner())?;
        let policy = self.gw.update_send_policy(c, patch).await?;
        Ok(Response::new(UpdateSendPolicyResponse {
            policy: Some(super::send_policy::to_proto(policy)),
        }))
    }
}
