//! `/healthz` (the process serves) and `/readyz` (its dependencies answer, each checked
//! with a fresh connection within [`READY_TIMEOUT`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mysql_async::prelude::Queryable;
use serde_json::{Value as Json, json};
use tracing::warn;

use super::ApiState;
use crate::error::{Error, Result};
use crate::redact::{redact_url, scrub};

/// How long `/readyz` waits for each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies `/readyz` checks, each with a fresh connection and [`READY_TIMEOUT`].
#[derive(Clone)]
pub struct Readiness {
    pub(super) pool: mysql_async::Pool,
    pub(super) mysql_url: String,
    redis: redis::Client,
    pub(super) redis_url: String,
    amqp_url: Option<String>,
}

impl Readiness {
    /// Checks MySQL through `pool` (reached at `mysql_url`, shown redacted) and Redis at
    /// `redis_url`, plus RabbitMQ at `amqp_url` when given (the `mq` strategy).
    pub fn new(
        pool: mysql_async::Pool,
        mysql_url: &str,
        redis_url: &str,
        amqp_url: Option<&str>,
    ) -> Result<Readiness> {
        let redis = redis::Client::open(redis_url)
            .map_err(|e| Error::Config(vec![scrub(&format!("redis.url: {e}"), redis_url)]))?;
        Ok(Readiness {
            pool,
            mysql_url: mysql_url.to_owned(),
            redis,
            redis_url: redis_url.to_owned(),
            amqp_url: amqp_url.map(str::to_owned),
        })
    }

    async fn mysql(&self) -> std::result::Result<(), String> {
        let check = async {
            let mut conn = self.pool.get_conn().await?;
            conn.ping().await
        };
        within(&self.mysql_url, "MySQL", check).await
    }

    async fn redis(&self) -> std::result::Result<(), String> {
        let check = async {
            let mut conn = self.redis.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        within(&self.redis_url, "Redis", check).await
    }

    async fn amqp(&self, url: &str) -> std::result::Result<(), String> {
        let check = async {
            let conn =
                lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
            conn.close(200, "readiness check done".into()).await
        };
        within(url, "RabbitMQ", check).await
    }
}

/// Runs a readiness `check` of `service` at `url` within [`READY_TIMEOUT`]; the error
/// is one line naming the service and its redacted URL.
async fn within<T, E: std::fmt::Display>(
    url: &str,
    service: &str,
    check: impl Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<(), String> {
    let shown = redact_url(url);
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(_)) => Ok(()),
        // A client library's message may quote the URL, or pieces of it it misread.
        Ok(Err(e)) => Err(scrub(
            &format!("cannot reach {service} at {shown}: {e}"),
            url,
        )),
        Err(_) => Err(format!(
            "cannot reach {service} at {shown}: no answer within {}s",
            READY_TIMEOUT.as_secs()
        )),
    }
}

/// Whether the process serves (never needs the token).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    responses((status = 200, description = "Serving", body = super::schema::Health)),
)]
pub(super) async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Whether MySQL, Redis (and RabbitMQ for mq) answer, each within 2 s.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    responses(super::schema::ReadyAnswers)
)]
pub(super) async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let r = &state.readiness;
    let amqp = async {
        match &r.amqp_url {
            Some(url) => Some(r.amqp(url).await),
            None => None,
        }
    };
    let (mysql, redis, amqp) = tokio::join!(r.mysql(), r.redis(), amqp);
    let mut ready = true;
    let mut state_of = |check: std::result::Result<(), String>| match check {
        Ok(()) => Json::from("ok"),
        Err(e) => {
            ready = false;
            Json::from(e)
        }
    };
    let mut body = serde_json::Map::new();
    body.insert("mysql".to_owned(), state_of(mysql));
    body.insert("redis".to_owned(), state_of(redis));
    if let Some(amqp) = amqp {
        body.insert("rabbitmq".to_owned(), state_of(amqp));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    body.insert(
        "status".to_owned(),
        Json::from(if ready { "ready" } else { "unavailable" }),
    );
    if !ready {
        warn!(state = %Json::Object(body.clone()), "not ready");
    }
    (status, axum::Json(Json::Object(body))).into_response()
}
