//! Compiles proto/ with protox (pure Rust), so building wagate needs no system protoc.
use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "wagate/v1/messaging.proto",
    "wagate/v1/sessions.proto",
    "wagate/v1/webhooks.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("wagate_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
