//! `[api]`: the sidecar HTTP API (its keys are documented in `docs/configuration.md`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// `[api]`: the sidecar HTTP write API.
#[derive(Debug, Clone, Deserialize)]
pub struct RawApi {
    /// Where the API listens; a non-loopback address needs `token` (or
    /// `allow_unauthenticated_remote`).
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// When set, requests must send `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    /// Serve a non-loopback `listen` without a token anyway: for an API a firewall or an
    /// authenticating proxy already guards. Off by default, because without a token
    /// anyone who reaches the port can write every synced table.
    #[serde(default)]
    pub allow_unauthenticated_remote: bool,
    /// Most connections served at once; more are answered 503 and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Milliseconds a connection has to send a request's head, counted from when the
    /// server starts waiting for it — also how long an idle keep-alive connection stays.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Milliseconds a request has to send its body once its head arrived.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
}

fn default_api_listen() -> String {
    "127.0.0.1:8480".to_owned()
}

fn default_max_connections() -> usize {
    Limits::default().max_connections
}

fn default_header_timeout_ms() -> u64 {
    Limits::default().header_timeout.as_millis() as u64
}

fn default_body_timeout_ms() -> u64 {
    Limits::default().body_timeout.as_millis() as u64
}

/// How much the API lets clients hold: connections and time. What a slow or hostile
/// client can take is bounded by these, not by the process's file descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are shed with 503.
    pub max_connections: usize,
    /// To send a request head (also the idle keep-alive limit).
    pub header_timeout: Duration,
    /// To send a request body once the head arrived.
    pub body_timeout: Duration,
}

impl Default for Limits {
    /// 512 connections (half of the common 1024 file-descriptor limit, leaving the rest
    /// to MySQL, Redis and the broker); 10 s for a head or a body, far more than any
    /// client on a network that works needs.
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Validated `[api]` settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// A tokenless API on a non-loopback address was allowed explicitly.
    pub allow_unauthenticated_remote: bool,
    pub limits: Limits,
}

impl RawApi {
    /// Records the problems of `[api]`; the settings when there are none.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<ApiConfig> {
        let before = problems.len();
        let listen = self.listen.parse::<SocketAddr>().ok();
        if listen.is_none() {
            problems.push(format!(
                "api.listen: expected IP:port such as 127.0.0.1:8480, got {:?}",
                self.listen
            ));
        }
        match self.token.as_deref() {
            Some(token) if token.trim().is_empty() => problems.push(
                "api.token: must not be empty or blank (leave it out for no token)".to_owned(),
            ),
            // A client's `Bearer <token>` is read trimmed, so it could never match.
            Some(token) if token.trim() != token => problems.push(
                "api.token: must not start or end with whitespace (no client could send it)"
                    .to_owned(),
            ),
            _ => {}
        }
        if let Some(addr) = listen
            && !addr.ip().is_loopback()
            && self.token.is_none()
            && !self.allow_unauthenticated_remote
        {
            problems.push(format!(
                "api.listen: {addr} is not a loopback address and api.token is not set: anyone \
                 who reaches it could write every synced table; set api.token, or \
                 api.allow_unauthenticated_remote = true if a firewall or proxy guards it"
            ));
        }
        if self.max_connections == 0 {
            problems.push("api.max_connections: must be at least 1".to_owned());
        }
        for (key, value) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!("api.{key}: must be at least 1"));
            }
        }
        let listen = listen?;
        (problems.len() == before).then(|| ApiConfig {
            listen,
            token: self.token.clone(),
            allow_unauthenticated_remote: self.allow_unauthenticated_remote,
            limits: Limits {
                max_connections: self.max_connections,
                header_timeout: Duration::from_millis(self.header_timeout_ms),
                body_timeout: Duration::from_millis(self.body_timeout_ms),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: &str, token: Option<&str>) -> RawApi {
        RawApi {
            listen: listen.to_owned(),
            token: token.map(str::to_owned),
            allow_unauthenticated_remote: false,
            max_connections: 512,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
        }
    }

    fn problems(raw: &RawApi) -> Vec<String> {
        let mut problems = Vec::new();
        raw.validate(&mut problems);
        problems
    }

    #[test]
    fn a_tokenless_remote_api_needs_an_explicit_yes() {
        for listen in ["0.0.0.0:8480", "[::]:8480", "10.1.2.3:8480"] {
            let found = problems(&raw(listen, None));
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].starts_with("api.listen: "), "{found:?}");
            assert!(found[0].contains("api.allow_unauthenticated_remote"));
        }
        assert!(problems(&raw("0.0.0.0:8480", Some("s3cret"))).is_empty());
        assert!(problems(&raw("127.0.0.1:8480", None)).is_empty());
        assert!(problems(&raw("[::1]:8480", None)).is_empty());
        let allowed = RawApi {
            allow_unauthenticated_remote: true,
            ..raw("0.0.0.0:8480", None)
        };
        assert!(problems(&allowed).is_empty());
    }

    #[test]
    fn blank_tokens_and_zero_limits_are_refused() {
        for token in ["", "  ", "\t\n", " s3cret", "s3cret\n"] {
            let found = problems(&raw("127.0.0.1:8480", Some(token)));
            assert!(
                found.len() == 1 && found[0].starts_with("api.token: "),
                "{token:?}: {found:?}"
            );
        }
        let zero = RawApi {
            max_connections: 0,
            header_timeout_ms: 0,
            body_timeout_ms: 0,
            ..raw("127.0.0.1:8480", None)
        };
        assert_eq!(
            problems(&zero),
            [
                "api.max_connections: must be at least 1",
                "api.header_timeout_ms: must be at least 1",
                "api.body_timeout_ms: must be at least 1"
            ]
        );
    }
}
