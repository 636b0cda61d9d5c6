//! Compiles proto/ with protox (pure Rust), so building wagate needs no system protoc.
use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "wagate/internal/v1/node.proto",
    "wagate/v1/accounts.proto",
    "wagate/v1/broadcasts.proto",
    "wagate/v1/cluster.proto",
    "wagate/v1/messaging.proto",
    "wagate/v1/sessions.proto",
    "wagate/v1/webhooks.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox itself so the options (the `google.api.http` bindings) are kept: the
    // reflection service serves them, and the REST parity test reads them.
    std::fs::write(
        out.join("wagate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
