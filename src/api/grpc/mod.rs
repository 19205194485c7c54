//! The sidecar's gRPC API: what the HTTP API does, for applications (and service meshes)
//! that speak gRPC, plus a bidirectional `Write` stream for high-throughput writers. The
//! contract is `proto/cachesync/v1/cachesync.proto` (package `cachesync.v1`, service
//! `CacheSync`); `build.rs` compiles it without a system `protoc`.
//!
//! It serves from the HTTP API's [`ApiState`] — the same tables, write path, read path
//! and bearer token (`api.token`, sent as the metadata `authorization: Bearer …`) — so
//! the two APIs cannot drift apart; see [`service`] for the calls and [`status`] for the
//! error codes. Next to `CacheSync` it serves the standard `grpc.health.v1.Health` and
//! `grpc.reflection.v1` (and `v1alpha`) services (no token: they tell nothing about the data), so tools
//! such as `grpcurl` and Kubernetes gRPC probes work without the `.proto`.
//!
//! HTTP/2 without TLS, on the `[grpc]` listener (off when the section is absent). The
//! HTTP API's `Host` check against DNS rebinding is not needed here: a browser cannot
//! speak cleartext HTTP/2 with prior knowledge, let alone gRPC's framing.

pub mod config;
mod service;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

pub use self::config::GrpcConfig;
pub use self::service::MAX_BATCH_KEYS;
use crate::api::ApiState;
use crate::error::{Error, Result};

/// The messages and service generated from `proto/cachesync/v1/cachesync.proto`, with
/// the client the tests, the benchmark and Rust applications use.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("cachesync.v1");

    /// The compiled `.proto` (a `FileDescriptorSet`), for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/cachesync_descriptor.bin"));
}

/// How long a shutdown waits for calls in flight before it stops waiting for them (their
/// connections go when the process exits). `Write` streams end by themselves on shutdown;
/// what can hold a call this long is a write waiting inside MySQL, on a lock.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds the gRPC API's listener; the error names `grpc.listen`.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    crate::api::bind_for("grpc.listen", listen).await
}

/// Serves the gRPC API on `listener` within `config`'s limits until `shutdown` is
/// cancelled; then lets the calls in flight finish (at most [`SHUTDOWN_GRACE`]), waits
/// for the writes they started, and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    config: GrpcConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = crate::api::bound_address("grpc.listen", &listener)?;
    let failed = |reason: String| Error::Io {
        context: format!("serving the gRPC API on {addr}"),
        source: std::io::Error::other(reason),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    // v1, and v1alpha for the clients (older grpcurl among them) that know only that.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| failed(format!("building the reflection service: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    let cache_sync = pb::cache_sync_server::CacheSyncServer::new(service::CacheSync {
        state: state.clone(),
        max_in_flight: config.max_in_flight,
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    health
        .set_serving::<pb::cache_sync_server::CacheSyncServer<service::CacheSync>>()
        .await;
    let authorized = InterceptedService::new(cache_sync, {
        let state = state.clone();
        move |request: tonic::Request<()>| {
            let given = request.metadata().get("authorization");
            match state.check_bearer(given.map(|v| v.as_bytes())) {
                Ok(()) => Ok(request),
                Err(refused) => Err(status::status(refused)),
            }
        }
    });
    info!(
        listen = %addr,
        token = state.has_token(),
        max_message_bytes = config.max_message_bytes,
        max_in_flight = config.max_in_flight,
        "gRPC API listening"
    );
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(authorized)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.clone().cancelled_owned(),
        );
    // A graceful shutdown waits for every call to finish; one stuck on a lock in MySQL
    // must not hold the daemon's shutdown (the drain limit is for the strategy).
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| failed(e.to_string()))?,
        () = deadline => warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "gRPC calls still open after the shutdown grace; no longer waiting for them"
        ),
    }
    state.writes_finished().await;
    Ok(())
}
