//! `wagate.v1.MessagingService` over the service layer.

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::{
    json_to_struct, kind_from_proto, kind_to_proto, non_empty, status_from_proto, status_to_proto,
    struct_to_json, timestamp,
};
use crate::domain::Gateway;
use crate::domain::messaging::{ListQuery, MediaUpload, MessageView, SendCommand};
use crate::proto::v1::messaging_service_server::MessagingService;
use crate::proto::v1::{
    GetMessageStatusRequest, GetMessageStatusResponse, ListMessagesRequest, ListMessagesResponse,
    Message, SendMessageRequest, SendMessageResponse,
};

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
        status: status_to_proto(&m.status) as i32,
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

#[tonic::async_trait]
impl MessagingService for MessagingApi {
    async fn send_message(
        &self,
        req: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let caller = caller(&req)?;
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
        let r = self.gw.send(&caller, cmd).await?;
        Ok(Response::new(SendMessageResponse {
            id: r.id,
            status: status_to_proto(&r.status) as i32,
            device: r.device_code,
            server_id: self.gw.node_id().to_owned(),
        }))
    }

    async fn get_message_status(
        &self,
        req: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        let caller = caller(&req)?;
        let m = self.gw.message_status(&caller, &req.get_ref().id).await?;
        Ok(Response::new(GetMessageStatusResponse {
            message: Some(to_proto(m)),
        }))
    }

    async fn list_messages(
        &self,
        req: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let caller = caller(&req)?;
        let m = req.into_inner();
        let page = self
            .gw
            .list_messages(
                &caller,
                ListQuery {
                    page_size: (m.page_size != 0).then_some(i64::from(m.page_size)),
                    page_token: non_empty(m.page_token),
                    device_code: non_empty(m.device_code),
                    status: status_from_proto(m.status).map(str::to_owned),
                },
            )
            .await?;
        Ok(Response::new(ListMessagesResponse {
            messages: page.messages.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }
}
