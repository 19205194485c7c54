//! `[grpc]`: the gRPC API (its keys are documented in `docs/configuration.md`). It has no
//! token of its own: the HTTP API's `api.token` guards both, so one secret is handed to
//! applications whichever protocol they speak.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::api::BODY_LIMIT;
use crate::api::config::RawApi;

/// `[grpc]`: the gRPC API, served only when the section is present.
#[derive(Debug, Clone, Deserialize)]
pub struct RawGrpc {
    /// Where the gRPC API listens (HTTP/2 without TLS, like the HTTP API).
    #[serde(default = "default_grpc_listen")]
    pub listen: String,
    /// Largest message accepted or sent, in bytes; a larger request fails with
    /// OUT_OF_RANGE and the server goes on.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Writes of one `Write` stream running at once; beyond that the server stops
    /// reading the stream until the oldest one is answered.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Calls at once on one HTTP/2 connection (the `SETTINGS_MAX_CONCURRENT_STREAMS` the
    /// server announces).
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
}

fn default_grpc_listen() -> String {
    "127.0.0.1:50051".to_owned()
}

/// The HTTP API's body limit: a row is the same size whichever way it comes.
fn default_max_message_bytes() -> usize {
    BODY_LIMIT
}

fn default_max_in_flight() -> usize {
    64
}

fn default_max_concurrent_streams() -> u32 {
    256
}

/// Validated `[grpc]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    pub max_message_bytes: usize,
    pub max_in_flight: usize,
    pub max_concurrent_streams: u32,
}

impl RawGrpc {
    /// Records the problems of `[grpc]` (next to `[api]`, whose token it shares); the
    /// settings when there are none.
    pub fn validate(&self, api: Option<&RawApi>, problems: &mut Vec<String>) -> Option<GrpcConfig> {
        let before = problems.len();
        let listen = self.listen.parse::<SocketAddr>().ok();
        if listen.is_none() {
            problems.push(format!(
                "grpc.listen: expected IP:port such as 127.0.0.1:50051, got {:?}",
                self.listen
            ));
        }
        let token = api.is_some_and(|api| api.token.is_some());
        let allowed = api.is_some_and(|api| api.allow_unauthenticated_remote);
        if let Some(addr) = listen
            && !addr.ip().is_loopback()
            && !token
            && !allowed
        {
            problems.push(format!(
                "grpc.listen: {addr} is not a loopback address and api.token (which guards the \
                 gRPC API too) is not set: anyone who reaches it could write every synced \
                 table; set api.token, or api.allow_unauthenticated_remote = true if a \
                 firewall or proxy guards it"
            ));
        }
        for (key, value) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_in_flight", self.max_in_flight),
            (
                "max_concurrent_streams",
                self.max_concurrent_streams as usize,
            ),
        ] {
            if value == 0 {
                problems.push(format!("grpc.{key}: must be at least 1"));
            }
        }
        let listen = listen?;
        (problems.len() == before).then_some(GrpcConfig {
            listen,
            max_message_bytes: self.max_message_bytes,
            max_in_flight: self.max_in_flight,
            max_concurrent_streams: self.max_concurrent_streams,
        })
    }
}

impl Default for RawGrpc {
    fn default() -> RawGrpc {
        RawGrpc {
            listen: default_grpc_listen(),
            max_message_bytes: default_max_message_bytes(),
            max_in_flight: default_max_in_flight(),
            max_concurrent_streams: default_max_concurrent_streams(),
        }
    }
}

impl Default for GrpcConfig {
    /// The defaults of `[grpc]` (for tests and embedders).
    fn default() -> GrpcConfig {
        let mut problems = Vec::new();
        RawGrpc::default()
            .validate(None, &mut problems)
            .expect("the defaults of [grpc] are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(raw: &RawGrpc, api: Option<&RawApi>) -> Vec<String> {
        let mut problems = Vec::new();
        raw.validate(api, &mut problems);
        problems
    }

    fn api(token: Option<&str>, allow: bool) -> RawApi {
        RawApi {
            listen: "127.0.0.1:8480".to_owned(),
            token: token.map(str::to_owned),
            allow_unauthenticated_remote: allow,
            max_connections: 512,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
        }
    }

    #[test]
    fn defaults_are_valid_and_on_loopback() {
        let config = GrpcConfig::default();
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.max_message_bytes, BODY_LIMIT);
    }

    #[test]
    fn a_bad_listen_names_the_key() {
        let raw = RawGrpc {
            listen: "localhost".to_owned(),
            ..RawGrpc::default()
        };
        assert_eq!(
            problems(&raw, None),
            ["grpc.listen: expected IP:port such as 127.0.0.1:50051, got \"localhost\""]
        );
    }

    #[test]
    fn a_remote_listen_needs_the_api_token_or_an_explicit_yes() {
        let remote = RawGrpc {
            listen: "0.0.0.0:50051".to_owned(),
            ..RawGrpc::default()
        };
        let found = problems(&remote, None);
        assert!(
            found.len() == 1 && found[0].starts_with("grpc.listen: "),
            "{found:?}"
        );
        assert!(problems(&remote, Some(&api(None, false))).len() == 1);
        assert!(problems(&remote, Some(&api(Some("s3cret"), false))).is_empty());
        assert!(problems(&remote, Some(&api(None, true))).is_empty());
    }

    #[test]
    fn zero_limits_are_refused() {
        let zero = RawGrpc {
            max_message_bytes: 0,
            max_in_flight: 0,
            max_concurrent_streams: 0,
            ..RawGrpc::default()
        };
        assert_eq!(
            problems(&zero, None),
            [
                "grpc.max_message_bytes: must be at least 1",
                "grpc.max_in_flight: must be at least 1",
                "grpc.max_concurrent_streams: must be at least 1"
            ]
        );
    }
}
