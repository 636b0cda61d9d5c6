//! wagate: a self-hosted WhatsApp messaging gateway.
//!
//! Layout: `transport` (gRPC, grpc-web, REST) → `domain` (the service layer) → `storage`
//! (diesel, SQLite or PostgreSQL). `app` wires them together; `cli` is the binary's front;
//! `values` holds the typed ids and statuses every layer shares.

pub mod app;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod events;
pub mod proto;
pub mod sessions;
pub mod storage;
pub mod transport;
pub mod values;
pub mod webhooks;
