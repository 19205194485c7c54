//! Compiles `proto/cachesync/v1/cachesync.proto` into the gRPC API's messages and service
//! (`crate::api::grpc::pb`) without a system `protoc`: protox (a protobuf compiler in
//! Rust) parses it into a descriptor set, tonic-prost-build generates the code from that
//! set, and the set itself is kept in `OUT_DIR/cachesync_descriptor.bin` for server
//! reflection (what `grpcurl list` reads).

use std::path::PathBuf;

use prost::Message as _;

const PROTO: &str = "proto/cachesync/v1/cachesync.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cachesync_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // The tests and the bench use the generated client too.
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
