//! `[api]`: the sidecar HTTP API (its keys are documented in `docs/configuration.md`).

use std::net::SocketAddr;

use serde::Deserialize;

/// `[api]`: the sidecar HTTP write API.
#[derive(Debug, Clone, Deserialize)]
pub struct RawApi {
    /// Where the API listens; keep it on loopback unless a token is set.
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// When set, requests must send `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_api_listen() -> String {
    "127.0.0.1:8480".to_owned()
}

/// Validated `[api]` settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

impl RawApi {
    /// Records the problems of `[api]`; the settings when there are none.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<ApiConfig> {
        match self.listen.parse::<SocketAddr>() {
            Ok(listen) => {
                if self.token.as_deref() == Some("") {
                    problems.push(
                        "api.token: must not be empty (leave it out for no token)".to_owned(),
                    );
                }
                Some(ApiConfig {
                    listen,
                    token: self.token.clone(),
                })
            }
            Err(_) => {
                problems.push(format!(
                    "api.listen: expected IP:port such as 127.0.0.1:8480, got {:?}",
                    self.listen
                ));
                None
            }
        }
    }
}
