//! The bodies of the HTTP API as the OpenAPI document ([`super::openapi`]) describes
//! them. Most are schemas only — the handlers send rows as raw JSON and build the
//! receipt themselves — so they live apart from both: the handlers' `#[utoipa::path]`
//! name them, and the unit tests of [`super::openapi`] check them against what the
//! handlers really send.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::error::ErrorBody;

/// The `{table}` of the row routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // axum extracts it as a plain String (super::read, super::write)
pub struct TablePath {
    /// `database.table`, a configured table.
    table: String,
}

/// A row: a JSON object column → value. Numbers keep their exact digits; DECIMAL, dates
/// and times are strings, binary columns base64.
#[derive(ToSchema)]
#[schema(example = json!({"id": 7, "sku": "A-7", "price": "9.90"}))]
#[allow(dead_code)] // a schema only: rows travel as raw JSON (crate::model::json)
pub struct Row(BTreeMap<String, Json>);

/// The 200 answer of a write (`PUT` or `DELETE`).
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: super::write::receipt_json builds it (checked below)
pub struct Receipt {
    /// `database.table`.
    table: String,
    op: WriteOp,
    /// When MySQL committed the change, µs since the Unix epoch.
    committed_at_us: u64,
    /// The version the change carries; null when the table has no version column.
    version: Option<u64>,
    redis: RedisState,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum WriteOp {
    Upsert,
    Delete,
}

/// Where Redis stands for this change when the write answers.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RedisState {
    /// dual-write wrote Redis itself: changes written, written again at the same version
    /// (a replay), skipped because Redis held a newer version.
    Applied {
        written: u64,
        replayed: u64,
        stale: u64,
    },
    /// `pending`: dual-write's Redis write failed after the commit; the key waits in the
    /// repair queue. `background`: the mq consumer or the binlog tailer applies it.
    Later(Later),
}

#[derive(ToSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Later {
    Pending,
    Background,
}

/// The body of `POST /v1/snapshots` (an empty body means every table).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotRequest {
    /// `database.table` names; every configured table when empty or left out.
    tables: Option<Vec<String>>,
}

/// The 202 answer of `POST /v1/snapshots`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotsRequested {
    snapshots: Vec<Requested>,
}

/// What the request did for one table (`crate::snapshot::Requested`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Requested {
    table: String,
    /// `started`, or `running` when one was under way (it carries on).
    state: String,
}

/// The 200 answer of `GET /v1/snapshots`: the snapshots not finished.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SnapshotsRunning {
    snapshots: Vec<Progress>,
}

/// One table's snapshot (`crate::snapshot::Progress`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Progress {
    table: String,
    reason: String,
    rows_done: u64,
    /// Estimated from information_schema until the snapshot ends.
    rows_total: Option<u64>,
    rows_per_s: Option<u64>,
    requested_at_ms: u64,
    /// Set when the last attempt failed with an error retrying cannot fix.
    error: Option<String>,
}

/// The answer of `/healthz`.
#[derive(ToSchema)]
#[schema(example = json!({"status": "ok"}))]
#[allow(dead_code)]
pub struct Health {
    status: String,
}

/// The answer of `/readyz`: `ready` and `"ok"` for each dependency, or `unavailable`
/// with the failing one's message (password redacted) in place of `"ok"`.
#[derive(ToSchema)]
#[schema(example = json!({"status": "ready", "mysql": "ok", "redis": "ok"}))]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: String,
    mysql: String,
    redis: String,
    /// Only for the mq strategy.
    rabbitmq: Option<String>,
}

/// The answers of `/readyz`.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ReadyAnswers {
    /// Every dependency answers.
    #[response(status = 200)]
    Ready(Readiness),
    /// A dependency does not: its message (password redacted) in place of `"ok"`.
    #[response(status = 503)]
    Unavailable(Readiness),
}

/// The answers of `PUT` and `DELETE /v1/tables/{table}/rows`.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum WriteAnswers {
    /// Written: MySQL committed (and, for dual-write, Redis written).
    #[response(status = 200)]
    Written(Receipt),
    /// The body is not a JSON object, a column is unknown or of the wrong type, a
    /// primary-key column is missing, or MySQL refused the value (the message names the
    /// column).
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// Not a configured table.
    #[response(status = 404)]
    UnknownTable(ErrorBody),
    /// The body did not arrive within api.body_timeout_ms.
    #[response(status = 408)]
    Slow(ErrorBody),
    /// A UNIQUE key or a foreign key of another row collides.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over 1 MiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// An error of ours or MySQL's that retrying will not fix.
    #[response(status = 500)]
    Failed(ErrorBody),
    /// MySQL, Redis or the broker cannot be reached or asked to retry (deadlock, lock
    /// wait, read-only); `Retry-After: 1`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}
