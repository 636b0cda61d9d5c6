//! The one integration-test binary: every module below shares `support`.
mod support;

mod at_rest;
mod cluster;
mod device_store;
mod failover;
mod grpc;
mod hardening;
mod openapi;
mod poison;
mod queue;
mod rk_api;
mod sak_api;
mod server;
mod sessions;
mod transcoding;
mod wasim;
mod webhooks;
