//! Generated protobuf types and tonic services (`proto/wagate/v1`, `proto/wagate/internal/v1`).

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("wagate.v1");
}

/// Node-to-node calls of a cluster (`proto/wagate/internal/v1`).
#[allow(clippy::all, clippy::pedantic)]
pub mod internal {
    tonic::include_proto!("wagate.internal.v1");
}

/// Encoded descriptors of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wagate_descriptor.bin"));
