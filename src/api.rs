//! The sidecar HTTP API: applications that cannot link the library upsert and delete
//! rows of the configured tables over HTTP, through the configured strategy's write path
//! ([`SyncStrategy::write`]), and read them through the cache-aside read path
//! ([`crate::read`]).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/tables/{db.table}/rows?<pk column>=<value>&…` | — | 200 the row as JSON (the `json` encoding without `_cachesync_v`), 404 no such row |
//! | `PUT /v1/tables/{db.table}/rows` | JSON object column → value, every primary-key column included | 200 receipt |
//! | `DELETE /v1/tables/{db.table}/rows` | JSON object of exactly the primary-key columns | 200 receipt |
//! | `GET /healthz` | — | 200 `{"status":"ok"}` while the process serves (never needs the token) |
//! | `GET /readyz` | — | 200 or 503 with the state of MySQL, Redis (and RabbitMQ for `mq`) |
//!
//! A write answers once the strategy's write path has completed (dual-write: MySQL
//! committed and Redis written; mq: the broker confirmed; binlog: the commit). It runs
//! as its own task, so a client that hangs up mid-write cannot cut a dual-write between
//! the commit and Redis; [`serve`] waits for such writes before it returns.
//!
//! Request values are checked against the column's declared type ([`ColumnType`]) and
//! reach MySQL only as statement parameters ([`crate::sqlwrite`]). Every error is
//! `{"error": "<message>"}` with the status [`status_of`] picks; the messages name the
//! column or table at fault.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::applier::{Applier, Op};
use crate::error::{Error, Result};
use crate::read::{Answer, ReadError, ReadPath};
use crate::redact::redact_url;
use crate::schema::{ColumnType, SyncedTable};
use crate::strategy::{RedisOutcome, RowWrite, Strategy, SyncStrategy, WriteReceipt};

/// Largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long `/readyz` waits for each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// MySQL server errors that answer with something other than 500: the request's data
/// does not fit the table (400), conflicts with other rows (409), or met a transient
/// condition worth retrying (503). Anything not listed is 500.
const MYSQL_STATUS: &[(u16, StatusCode)] = &[
    (1062, StatusCode::CONFLICT),    // duplicate entry for a unique key
    (1451, StatusCode::CONFLICT),    // row still referenced by a foreign key
    (1452, StatusCode::CONFLICT),    // foreign-key parent row missing
    (1048, StatusCode::BAD_REQUEST), // column cannot be null
    (1364, StatusCode::BAD_REQUEST), // NOT NULL column without default left out
    (1406, StatusCode::BAD_REQUEST), // data too long for column
    (1264, StatusCode::BAD_REQUEST), // out of range value
    (1265, StatusCode::BAD_REQUEST), // data truncated (ENUM/SET member, ...)
    (1366, StatusCode::BAD_REQUEST), // incorrect value (decimal, charset, ...)
    (1292, StatusCode::BAD_REQUEST), // incorrect date/time value
    (1367, StatusCode::BAD_REQUEST), // illegal value (non-finite double)
    (3140, StatusCode::BAD_REQUEST), // MySQL: invalid JSON text
    (3819, StatusCode::BAD_REQUEST), // MySQL: CHECK constraint violated
    (4025, StatusCode::BAD_REQUEST), // MariaDB: CHECK constraint violated
    (1205, StatusCode::SERVICE_UNAVAILABLE), // lock wait timeout: retry
    (1213, StatusCode::SERVICE_UNAVAILABLE), // deadlock: retry
    (1040, StatusCode::SERVICE_UNAVAILABLE), // too many connections
    (1290, StatusCode::SERVICE_UNAVAILABLE), // server is --read-only (fail-over)
    (1792, StatusCode::SERVICE_UNAVAILABLE), // read-only transaction
    (1927, StatusCode::SERVICE_UNAVAILABLE), // MariaDB: connection was killed
];

/// The HTTP status an error of a write answers with. The one place that decides it.
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidWrite(_) => StatusCode::BAD_REQUEST,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Mysql {
            source: mysql_async::Error::Server(server),
            ..
        } => MYSQL_STATUS
            .iter()
            .find(|(code, _)| *code == server.code)
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |(_, status)| *status),
        // A dependency that cannot be reached, refuses us, or (the strategy's own
        // machinery: broker, stream) failed: the write may succeed later.
        Error::Unreachable { .. } | Error::Refused { .. } | Error::Strategy { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        other if other.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer: `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let status = status_of(&error);
        // `Error::Many` renders one problem per line; a JSON message is one line.
        ApiError::new(status, error.to_string().replace('\n', "; "))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = self.status.as_u16(), error = %self.message, "api request failed");
        } else {
            debug!(status = self.status.as_u16(), error = %self.message, "api request refused");
        }
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The dependencies `/readyz` checks, each with a fresh connection and [`READY_TIMEOUT`].
#[derive(Clone)]
pub struct Readiness {
    pool: mysql_async::Pool,
    mysql_url: String,
    redis: redis::Client,
    redis_url: String,
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
            .map_err(|e| Error::Config(vec![format!("redis.url: {e}")]))?;
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
    let url = redact_url(url);
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach {service} at {url}: {e}")),
        Err(_) => Err(format!(
            "cannot reach {service} at {url}: no answer within {}s",
            READY_TIMEOUT.as_secs()
        )),
    }
}

/// What the API serves from.
pub struct ApiState {
    strategy: Arc<Strategy>,
    /// By `database.table`.
    tables: HashMap<String, Arc<SyncedTable>>,
    token: Option<String>,
    readiness: Readiness,
    /// Writes in flight, which outlive a client that hangs up.
    writes: TaskTracker,
    /// The read path behind `GET`: given, or built on the first read from the readiness
    /// check's MySQL pool and Redis URL (so a sidecar that is never read connects nothing).
    reads: tokio::sync::OnceCell<Arc<ReadPath>>,
}

impl ApiState {
    /// Writes go through `strategy` to `tables`; when `token` is set every route but
    /// `/healthz` needs `Authorization: Bearer <token>`.
    pub fn new(
        strategy: Arc<Strategy>,
        tables: Vec<Arc<SyncedTable>>,
        readiness: Readiness,
        token: Option<String>,
    ) -> Arc<ApiState> {
        Self::build(strategy, tables, readiness, token, None)
    }

    /// Like [`ApiState::new`], with the read path `reads` behind `GET` (tests and the
    /// read-storm scenario bring their own, e.g. reading MySQL as a dedicated user).
    pub fn with_reads(
        strategy: Arc<Strategy>,
        tables: Vec<Arc<SyncedTable>>,
        readiness: Readiness,
        token: Option<String>,
        reads: Arc<ReadPath>,
    ) -> Arc<ApiState> {
        Self::build(strategy, tables, readiness, token, Some(reads))
    }

    fn build(
        strategy: Arc<Strategy>,
        tables: Vec<Arc<SyncedTable>>,
        readiness: Readiness,
        token: Option<String>,
        reads: Option<Arc<ReadPath>>,
    ) -> Arc<ApiState> {
        Arc::new(ApiState {
            strategy,
            tables: tables.into_iter().map(|t| (t.name(), t)).collect(),
            token,
            readiness,
            writes: TaskTracker::new(),
            reads: tokio::sync::OnceCell::new_with(reads),
        })
    }

    /// The read path, connected on first use; Bloom filters not built yet are built in
    /// the background (reads skip a filter until it is ready).
    async fn reads(&self) -> Result<Arc<ReadPath>> {
        self.reads
            .get_or_try_init(|| async {
                // Fills never delete, so the tombstone TTL of this applier is unused.
                const UNUSED_TOMBSTONE_TTL: Duration = Duration::from_secs(3600);
                let applier = Applier::connect(
                    &self.readiness.redis_url,
                    UNUSED_TOMBSTONE_TTL,
                    self.strategy.kind(),
                )
                .await?;
                let mut tables: Vec<Arc<SyncedTable>> = self.tables.values().cloned().collect();
                tables.sort_by_key(|t| t.config.index);
                let reads = ReadPath::new(
                    self.readiness.pool.clone(),
                    &self.readiness.mysql_url,
                    applier,
                    &tables,
                );
                let builder = reads.clone();
                tokio::spawn(async move {
                    match builder.build_bloom_filters().await {
                        Ok(built) => {
                            for (table, rows) in built {
                                info!(table, rows, "bloom filter built");
                            }
                        }
                        Err(e) => warn!(error = %e, "could not build the bloom filters; reads go without them"),
                    }
                });
                Ok(reads)
            })
            .await
            .cloned()
    }
}

/// The API's routes on `state`.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(
            "/v1/tables/{table}/rows",
            get(read).put(upsert).delete(delete),
        )
        .route("/readyz", get(readyz))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Binds the API's listener; the error names `api.listen`.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|source| Error::Io {
        context: format!("api.listen: cannot listen on {listen}"),
        source,
    })
}

/// Serves the API on `listener` until `shutdown` is cancelled, then finishes the
/// requests in flight and the writes they started, and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr().ok();
    if let Some(addr) = addr {
        info!(
            listen = %addr,
            token = state.token.is_some(),
            "write API listening"
        );
        if !addr.ip().is_loopback() && state.token.is_none() {
            warn!(
                listen = %addr,
                "api.listen is not a loopback address and api.token is not set: \
                 anyone who reaches it can write"
            );
        }
    }
    let writes = state.writes.clone();
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    writes.close();
    writes.wait().await;
    served.map_err(|source| Error::Io {
        context: "serving the write API".to_owned(),
        source,
    })
}

/// Requires the bearer token on the routes it wraps, when one is configured.
async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send Authorization: Bearer <api.token>",
        )
        .into_response(),
        Some(token) if !same_secret(token.as_bytes(), expected.as_bytes()) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token").into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// Compares secrets in time independent of where they differ (only the length shows).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let diff = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0 && given.len() == expected.len()
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
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

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {}; routes: GET, PUT and DELETE /v1/tables/<database.table>/rows, \
             GET /healthz, GET /readyz",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// `GET /v1/tables/{table}/rows?<pk>=<value>&…`: the row through the read path.
async fn read(
    State(state): State<Arc<ApiState>>,
    table: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let Path(name) = table.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let reads = state.reads().await?;
    match reads.get(&name, &pairs).await {
        Ok(Answer::Found(doc)) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Bytes::copy_from_slice(&doc),
        )
            .into_response()),
        Ok(Answer::Absent) => {
            let key: Vec<String> = pairs.iter().map(|(c, v)| format!("{c}={v}")).collect();
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no row of {name} with {}", key.join(", ")),
            ))
        }
        Err(ReadError::UnknownTable(message) | ReadError::Disabled(message)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, message))
        }
        Err(ReadError::BadKey(message)) => Err(ApiError::bad_request(message)),
        Err(ReadError::Failed(error)) => Err(ApiError::new(
            status_of(&error),
            error.to_string().replace('\n', "; "),
        )),
    }
}

async fn upsert(
    state: State<Arc<ApiState>>,
    table: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    write(state, table, body, Op::Upsert).await
}

async fn delete(
    state: State<Arc<ApiState>>,
    table: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    write(state, table, body, Op::Delete).await
}

async fn write(
    State(state): State<Arc<ApiState>>,
    table: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
    op: Op,
) -> std::result::Result<Response, ApiError> {
    let Path(name) = table.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let table = state.tables.get(&name).cloned().ok_or_else(|| {
        let mut known: Vec<&str> = state.tables.keys().map(String::as_str).collect();
        known.sort_unstable();
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "unknown table {name}; configured tables: {}",
                known.join(", ")
            ),
        )
    })?;
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let object: Json = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let Json::Object(object) = object else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object of column name → value, got {}",
            json_kind(&object)
        )));
    };
    let values = row_values(&table, op, &object).map_err(ApiError::bad_request)?;
    let write = RowWrite {
        table: table.clone(),
        op,
        values,
    };
    // Its own task: a client that hangs up must not cut the write path in two.
    let strategy = state.strategy.clone();
    let receipt = state
        .writes
        .spawn(async move { strategy.write(write).await })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the write of a row of {name} failed: {e}"),
            )
        })??;
    Ok(axum::Json(receipt_json(&name, op, &receipt)).into_response())
}

/// The 200 answer of a write.
fn receipt_json(table: &str, op: Op, receipt: &WriteReceipt) -> Json {
    json!({
        "table": table,
        "op": match op { Op::Upsert => "upsert", Op::Delete => "delete" },
        "committed_at_us": receipt.committed_at_us,
        "version": receipt.version,
        "redis": match receipt.redis {
            RedisOutcome::Applied(a) => json!({
                "written": a.written,
                "replayed": a.replayed,
                "stale": a.stale,
            }),
            RedisOutcome::Pending => json!("pending"),
            RedisOutcome::Background => json!("background"),
        },
    })
}

/// The request's `column → value` object as SQL parameters, checked against `table`:
/// known columns, values that fit their declared types, the whole primary key (and, for
/// a delete, nothing else). `Err` is the message, naming the column.
pub fn row_values(
    table: &SyncedTable,
    op: Op,
    object: &serde_json::Map<String, Json>,
) -> std::result::Result<Vec<(String, Value)>, String> {
    let name = table.name();
    let schema = &table.schema;
    let pk_names = schema.primary_key_names();
    let mut values = Vec::with_capacity(object.len());
    for (column, value) in object {
        let position = schema
            .position(column)
            .ok_or_else(|| format!("{column} is not a column of {name}"))?;
        let is_key = pk_names.contains(&column.as_str());
        if op == Op::Delete && !is_key {
            return Err(format!(
                "a delete names only the primary key of {name} ({}); {column} is not part of it",
                pk_names.join(", ")
            ));
        }
        if is_key && value.is_null() {
            return Err(format!(
                "primary-key column {column} of {name} must not be null"
            ));
        }
        let ty = schema.columns[position].ty.as_ref().map_err(|declared| {
            format!("column {column} of {name} has type {declared}, which the API cannot write")
        })?;
        let value = sql_value(ty, value)
            .map_err(|reason| format!("column {column} of {name}: {reason}"))?;
        values.push((column.clone(), value));
    }
    for pk in &pk_names {
        if !object.contains_key(*pk) {
            return Err(format!("primary-key column {pk} of {name} is missing"));
        }
    }
    Ok(values)
}

/// A JSON value as the SQL parameter for a column of type `ty`: the inverse of the
/// `json` Redis encoding (DECIMAL as a string or number, binary as base64, JSON columns
/// as any JSON value). `null` is SQL `NULL`.
pub fn sql_value(ty: &ColumnType, value: &Json) -> std::result::Result<Value, String> {
    if value.is_null() {
        return Ok(Value::NULL);
    }
    let got = || format!("got {}", json_kind(value));
    match ty {
        ColumnType::Json => Ok(Value::Bytes(value.to_string().into_bytes())),
        ColumnType::Int { unsigned, bytes } => match value {
            Json::Bool(b) => Ok(Value::Int(i64::from(*b))),
            Json::Number(n) => {
                let bits = u32::from(*bytes) * 8;
                let (min, max): (i128, i128) = if *unsigned {
                    (0, (1i128 << bits) - 1)
                } else {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                };
                let v: i128 = match (n.as_i64(), n.as_u64()) {
                    (Some(v), _) => v.into(),
                    (None, Some(v)) => v.into(),
                    (None, None) => return Err(format!("expected an integer, got {n}")),
                };
                if v < min || v > max {
                    return Err(format!(
                        "{v} is out of range for a {}{}-byte integer column ({min}..={max})",
                        if *unsigned { "unsigned " } else { "" },
                        bytes
                    ));
                }
                Ok(match i64::try_from(v) {
                    Ok(v) => Value::Int(v),
                    Err(_) => Value::UInt(v as u64),
                })
            }
            _ => Err(format!("expected an integer, {}", got())),
        },
        ColumnType::Year | ColumnType::Bit => match value {
            Json::Bool(b) => Ok(Value::UInt(u64::from(*b))),
            Json::Number(n) => n
                .as_u64()
                .map(Value::UInt)
                .ok_or_else(|| format!("expected a non-negative integer, got {n}")),
            _ => Err(format!("expected a non-negative integer, {}", got())),
        },
        ColumnType::Decimal { .. } => match value {
            Json::String(s) if is_decimal_text(s) => Ok(Value::Bytes(s.clone().into_bytes())),
            Json::String(s) => Err(format!(
                "expected a decimal number such as \"12.50\", got {s:?}"
            )),
            Json::Number(n) => Ok(Value::Bytes(n.to_string().into_bytes())),
            _ => Err(format!(
                "expected a decimal number (string or number), {}",
                got()
            )),
        },
        ColumnType::Float | ColumnType::Double => match value {
            Json::Number(n) => n
                .as_f64()
                .map(Value::Double)
                .ok_or_else(|| format!("expected a number, got {n}")),
            _ => Err(format!("expected a number, {}", got())),
        },
        ColumnType::Binary { .. } => match value {
            Json::String(s) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(Value::Bytes)
                    .map_err(|e| {
                        format!("invalid base64 ({e}); binary columns take standard base64, as the json encoding shows them")
                    })
            }
            _ => Err(format!("expected a base64 string, {}", got())),
        },
        ColumnType::Text
        | ColumnType::Enum(_)
        | ColumnType::Set(_)
        | ColumnType::Date
        | ColumnType::DateTime { .. }
        | ColumnType::Timestamp { .. }
        | ColumnType::Time { .. } => match value {
            Json::String(s) => Ok(Value::Bytes(s.clone().into_bytes())),
            _ => Err(format!("expected a string, {}", got())),
        },
    }
}

/// `[+-]digits[.digits][e[+-]digits]`, at least one digit before the exponent.
fn is_decimal_text(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    !(int.is_empty() && frac.is_empty())
        && digits(int)
        && digits(frac)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// What kind of JSON value `v` is, for messages (`a string "7"`, `an array`).
fn json_kind(v: &Json) -> String {
    match v {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("a boolean {b}"),
        Json::Number(n) => format!("a number {n}"),
        Json::String(s) if s.chars().count() <= 40 => format!("a string {s:?}"),
        Json::String(_) => "a string".to_owned(),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql_error(code: u16) -> Error {
        Error::Mysql {
            context: "writing a row of shop.users".to_owned(),
            source: mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "server says no".to_owned(),
                state: "23000".to_owned(),
            }),
        }
    }

    #[test]
    fn status_mapping() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let cases = [
            (Error::InvalidWrite("x".into()), 400),
            (mysql_error(1062), 409),
            (mysql_error(1452), 409),
            (mysql_error(1406), 400),
            (mysql_error(1366), 400),
            (mysql_error(1213), 503),
            (mysql_error(1146), 500),
            (
                Error::Mysql {
                    context: "connecting".into(),
                    source: mysql_async::Error::Io(mysql_async::IoError::Io(io())),
                },
                503,
            ),
            (
                Error::Unreachable {
                    service: "Redis",
                    url: "redis://x".into(),
                    reason: "down".into(),
                },
                503,
            ),
            (
                Error::Redis {
                    context: "applying".into(),
                    source: redis::RedisError::from(io()),
                },
                503,
            ),
            (
                Error::Decode {
                    table: "t".into(),
                    column: "c".into(),
                    reason: "r".into(),
                },
                500,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(status_of(&error).as_u16(), status, "{error}");
        }
    }

    #[test]
    fn values_follow_the_column_type() {
        let int = |unsigned, bytes| ColumnType::Int { unsigned, bytes };
        assert_eq!(
            sql_value(&int(false, 1), &json!(-128)),
            Ok(Value::Int(-128))
        );
        assert!(
            sql_value(&int(false, 1), &json!(128))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            sql_value(&int(true, 4), &json!(-1))
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(
            sql_value(&int(true, 8), &json!(u64::MAX)),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            sql_value(&int(false, 8), &json!(i64::MIN)),
            Ok(Value::Int(i64::MIN))
        );
        assert!(
            sql_value(&int(false, 8), &json!(1.5))
                .unwrap_err()
                .contains("integer")
        );
        assert!(
            sql_value(&int(false, 8), &json!("7"))
                .unwrap_err()
                .contains("a string \"7\"")
        );
        assert_eq!(sql_value(&int(false, 1), &json!(true)), Ok(Value::Int(1)));
        assert_eq!(sql_value(&int(false, 1), &Json::Null), Ok(Value::NULL));

        let dec = ColumnType::Decimal { scale: 2 };
        for ok in ["12.50", "-1", "+.5", "3.", "1e3", "1.5E-2"] {
            assert_eq!(
                sql_value(&dec, &json!(ok)),
                Ok(Value::Bytes(ok.as_bytes().to_vec())),
                "{ok}"
            );
        }
        for bad in ["", ".", "1,5", "abc", "1e", "--1", "1.2.3", "0x10"] {
            assert!(sql_value(&dec, &json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            sql_value(&dec, &json!(2.25)),
            Ok(Value::Bytes(b"2.25".to_vec()))
        );

        let bin = ColumnType::Binary { pad_to: None };
        assert_eq!(
            sql_value(&bin, &json!("AAH/")),
            Ok(Value::Bytes(vec![0, 1, 255]))
        );
        assert!(
            sql_value(&bin, &json!("not base64!"))
                .unwrap_err()
                .contains("base64")
        );

        assert_eq!(
            sql_value(&ColumnType::Json, &json!({"b": [1, "x"], "a": null})),
            Ok(Value::Bytes(br#"{"a":null,"b":[1,"x"]}"#.to_vec()))
        );
        assert!(
            sql_value(&ColumnType::Text, &json!({"a": 1}))
                .unwrap_err()
                .contains("an object")
        );
        assert!(
            sql_value(&ColumnType::Text, &json!([1]))
                .unwrap_err()
                .contains("an array")
        );
        assert_eq!(
            sql_value(&ColumnType::Double, &json!(0.1)),
            Ok(Value::Double(0.1))
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cres", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
        assert!(!same_secret(b"s3cret!", b"s3cret"));
    }
}
