//! `wagate.v1.MessagingService` over the service layer.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::principal;
use super::convert::{
    json_to_struct, kind_from_proto, kind_to_proto, non_empty, status_name, status_to_proto,
    struct_to_json, timestamp,
};
use crate::domain::Gateway;
use crate::domain::broadcasts::media::UPLOAD_PATH;
use crate::domain::messaging::{ListQuery, MediaUpload, MessageView, SendCommand};
use crate::domain::sessions::HistoryItem as HistoryView;
use crate::proto::v1::messaging_service_server::MessagingService;
use crate::proto::v1::{
    Direction, DownloadMediaRequest, DownloadMediaResponse, GetMessageStatusRequest,
    GetMessageStatusResponse, HistoryItem, ListHistoryRequest, ListHistoryResponse,
    ListMessagesRequest, ListMessagesResponse, Message, SendMessageRequest, SendMessageResponse,
    UploadMediaRequest, UploadMediaResponse,
};

/// The chunk size of a media download.
const MEDIA_CHUNK: usize = 1024 * 1024;

pub struct MessagingApi {
    gw: Gateway,
}

impl MessagingApi {
    pub fn new(gw: Gateway) -> Self {
        MessagingApi { gw }
    }
}

fn metadata<T>(req: &Request<T>, name: &str) -> Option<String> {
    req.metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

fn to_proto(m: MessageView) -> Message {
    Message {
        id: m.id,
        status: status_to_proto(m.status) as i32,
        recipient: m.recipient,
        device_code: m.device_code,
        r#type: kind_to_proto(&m.kind) as i32,
        created_at: Some(timestamp(m.created_at)),
        sent_at: m.sent_at.map(timestamp),
        delivered_at: m.delivered_at.map(timestamp),
        read_at: m.read_at.map(timestamp),
        failed_at: m.failed_at.map(timestamp),
        error_code: m.error_code.unwrap_or_default(),
        error_message: m.error_message.unwrap_or_default(),
        payload: match m.payload {
            Some(serde_json::Value::Object(o)) => Some(json_to_struct(o)),
            _ => None,
        },
    }
}

fn history_item(h: HistoryView) -> HistoryItem {
    HistoryItem {
        id: h.id,
        direction: match h.direction {
            "inbound" => Direction::Inbound,
            _ => Direction::Outbound,
        } as i32,
        wa_message_id: h.wa_message_id.unwrap_or_default(),
        from: h.from.unwrap_or_default(),
        to: h.to.unwrap_or_default(),
        r#type: h.kind,
        text: h.text.unwrap_or_default(),
        status: h.status.map(status_to_proto).unwrap_or_default() as i32,
        push_name: h.push_name.unwrap_or_default(),
        time: Some(timestamp(h.at)),
    }
}

type MediaStream = Pin<Box<dyn Stream<Item = Result<DownloadMediaResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MessagingService for MessagingApi {
    async fn send_message(
        &self,
        req: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let p = principal(&req)?;
        let device = metadata(&req, "x-device-code");
        let request_id = metadata(&req, "x-request-id");
        let m = req.into_inner();
        let cmd = SendCommand {
            recipient: m.recipient,
            kind: kind_from_proto(m.r#type),
            text: non_empty(m.message),
            media: m.media.map(|x| MediaUpload {
                data: x.data,
                filename: non_empty(x.filename),
            }),
            payload: m.payload.map(struct_to_json),
            device_code: device.or_else(|| non_empty(m.device_code)),
            request_id,
        };
        let session = non_empty(m.session_id);
        let r = self.gw.send_as(&p, session.as_deref(), cmd).await?;
        Ok(Response::new(SendMessageResponse {
            id: r.id,
            status: status_to_proto(r.status) as i32,
            device: r.device_code,
            server_id: self.gw.node_id().to_owned(),
            recipient: r.recipient,
            session_id: r.session_id.into(),
            replayed: r.replayed,
        }))
    }

    async fn get_message_status(
        &self,
        req: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        let p = principal(&req)?;
        let m = self
            .gw
            .message_status(p.manager()?, &req.get_ref().id)
            .await?;
        Ok(Response::new(GetMessageStatusResponse {
            message: Some(to_proto(m)),
        }))
    }

    async fn list_messages(
        &self,
        req: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let p = principal(&req)?;
        let m = req.into_inner();
        let page = self
            .gw
            .list_messages(
                p.manager()?,
                ListQuery {
                    page_size: m.page_size.map(i64::from),
                    page_token: non_empty(m.page_token),
                    device_code: non_empty(m.device_code),
                    status: status_name(m.status).map(str::to_owned),
                },
            )
            .await?;
        Ok(Response::new(ListMessagesResponse {
            messages: page.messages.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_history(
        &self,
        req: Request<ListHistoryRequest>,
    ) -> Result<Response<ListHistoryResponse>, Status> {
        let p = principal(&req)?;
        let m = req.into_inner();
        let session = non_empty(m.session_id);
        let session = p.acting_session(&self.gw, session.as_deref()).await?;
        let (limit, offset) = (m.limit.unwrap_or(50), m.offset.unwrap_or(0));
        let items = self
            .gw
            .session_history(p.caller(), &session.id, i64::from(limit), i64::from(offset))
            .await?;
        Ok(Response::new(ListHistoryResponse {
            messages: items.into_iter().map(history_item).collect(),
            limit,
            offset,
        }))
    }

    async fn upload_media(
        &self,
        req: Request<UploadMediaRequest>,
    ) -> Result<Response<UploadMediaResponse>, Status> {
        let p = principal(&req)?;
        let m = req.into_inner();
        let up = self
            .gw
            .upload_media(p.manager()?, m.data, non_empty(m.filename))
            .await?;
        let base = m.base_url.trim().trim_end_matches('/');
        Ok(Response::new(UploadMediaResponse {
            url: format!("{base}{}{}", UPLOAD_PATH, up.media_id),
            media_id: up.media_id,
            mime_type: up.mime_type,
            filename: up.filename.unwrap_or_default(),
            size: up.size,
        }))
    }

    type DownloadMediaStream = MediaStream;

    async fn download_media(
        &self,
        req: Request<DownloadMediaRequest>,
    ) -> Result<Response<MediaStream>, Status> {
        let p = principal(&req)?;
        let blob = self.gw.media(p.manager()?, &req.get_ref().media_id).await?;
        let size = blob.data.len() as i64;
        let mut first = Some(DownloadMediaResponse {
            mime_type: blob.mime_type,
            filename: blob.filename.unwrap_or_default(),
            size,
            data: Vec::new(),
        });
        let chunks: Vec<Vec<u8>> = if blob.data.is_empty() {
            vec![Vec::new()]
        } else {
            blob.data.chunks(MEDIA_CHUNK).map(<[u8]>::to_vec).collect()
        };
        let stream = futures::stream::iter(chunks.into_iter().map(move |data| {
            let mut msg = first.take().unwrap_or_default();
            msg.data = data;
            Ok(msg)
        }));
        Ok(Response::new(Box::pin(stream)))
    }
}
