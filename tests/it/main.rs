//! The one integration-test binary: every module below shares `support`.

// A test binary: a panic is how a test reports, in helpers as in `#[test]` functions
// (clippy's allow-unwrap-in-tests sees only the latter).
#![allow(clippy::unwrap_used)]

mod support;

mod at_rest;
mod broadcast_media;
mod broadcasts;
mod cluster;
mod device_store;
mod failover;
mod grpc;
mod hardening;
mod openapi;
mod pacing;
mod poison;
mod queue;
mod rk_api;
mod sak_api;
mod server;
mod sessions;
mod transcoding;
mod wasim;
mod webhooks;
