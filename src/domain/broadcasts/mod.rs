//! Broadcasts: message templates and their rendering into ordinary WhatsApp messages (and,
//! as they land, contact lists, suppressions and campaigns). Every surface — gRPC
//! `BroadcastsService`, its REST transcoding under `/api/v1`, the Qontak surface — calls
//! these methods.

pub mod campaigns;
pub mod contacts;
pub mod health;
pub mod media;
pub mod model;
pub mod numbers;
pub mod pacing;
pub mod render;
pub mod suppressions;
pub mod templates;
