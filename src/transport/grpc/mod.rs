//! gRPC services (and grpc-web through tonic-web), health and reflection.

pub mod accounts;
pub mod auth;
pub mod broadcasts;
pub mod cluster;
pub mod convert;
pub mod messaging;
pub mod node;
pub mod send_policy;
pub mod sessions;
pub mod status;
pub mod webhooks;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::domain::Gateway;
use crate::proto::internal::node_service_server::NodeServiceServer;
use crate::proto::v1::accounts_service_server::AccountsServiceServer;
use crate::proto::v1::broadcasts_service_server::BroadcastsServiceServer;
use crate::proto::v1::cluster_service_server::ClusterServiceServer;
use crate::proto::v1::messaging_service_server::MessagingServiceServer;
use crate::proto::v1::sessions_service_server::SessionsServiceServer;
use crate::proto::v1::webhooks_service_server::WebhooksServiceServer;

/// The gRPC router: authenticated services, health, reflection; grpc-web translated in front.
pub async fn router(
    gw: Gateway,
    member: std::sync::Arc<crate::cluster::Membership>,
) -> Result<(axum::Router, HealthReporter), crate::error::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<MessagingServiceServer<messaging::MessagingApi>>()
        .await;
    // Both reflection versions: grpcurl speaks v1, but Python's grpcio-reflection, Postman
    // and Evans speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(crate::error::Error::internal)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(crate::error::Error::internal)?;
    let messaging = MessagingServiceServer::new(messaging::MessagingApi::new(gw.clone()))
        .max_decoding_message_size(auth::MAX_GRPC_MESSAGE_BYTES);
    health
        .set_serving::<SessionsServiceServer<sessions::SessionsApi>>()
        .await;
    let sessions = SessionsServiceServer::new(sessions::SessionsApi::new(gw.clone()));
    health
        .set_serving::<WebhooksServiceServer<webhooks::WebhooksApi>>()
        .await;
    let webhooks = WebhooksServiceServer::new(webhooks::WebhooksApi::new(gw.clone()));
    health
        .set_serving::<AccountsServiceServer<accounts::AccountsApi>>()
        .await;
    let accounts = AccountsServiceServer::new(accounts::AccountsApi::new(gw.clone()));
    health
        .set_serving::<BroadcastsServiceServer<broadcasts::BroadcastsApi>>()
        .await;
    let broadcasts = BroadcastsServiceServer::new(broadcasts::BroadcastsApi::new(gw.clone()));
    let cluster = ClusterServiceServer::new(cluster::ClusterApi::new(gw.clone()));
    let node = NodeServiceServer::new(node::NodeApi::new(member));
    let router = Routes::new(messaging)
        .add_service(sessions)
        .add_service(cluster)
        .add_service(node)
        .add_service(accounts)
        .add_service(webhooks)
        .add_service(broadcasts)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(gw, auth::authenticate))
        .layer(tonic_web::GrpcWebLayer::new());
    Ok((router, health))
}
