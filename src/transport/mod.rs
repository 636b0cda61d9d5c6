//! Transports: thin adapters from gRPC (tonic, also grpc-web) and REST (axum) onto the
//! service layer in `domain`. They decode, call, encode, and map errors; nothing else.

pub mod error;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod rest;
