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
//! | `POST /v1/snapshots` | `{"tables": ["db.t", …]}` (every table when empty) | 202: online snapshots started (or already running) |
//! | `GET /v1/snapshots` | — | 200 the online snapshots not finished, with their progress |
//! | `GET /healthz` | — | 200 `{"status":"ok"}` while the process serves (never needs the token) |
//! | `GET /readyz` | — | 200 or 503 with the state of MySQL, Redis (and RabbitMQ for `mq`) |
//! | `GET /openapi.json` | — | 200 the OpenAPI 3.1 document of these routes ([`openapi`]; no token needed) |
//!
//! [`ROUTES`] is the one list of them: the router is built from it, and a test checks the
//! OpenAPI document against it.
//!
//! A write answers once the strategy's write path has completed (dual-write: MySQL
//! committed and Redis written; mq: the broker confirmed; binlog: the commit). It runs
//! as its own task, so a client that hangs up mid-write cannot cut a dual-write between
//! the commit and Redis; [`serve`] waits for such writes before it returns.
//!
//! The gRPC API ([`grpc`], `proto/cachesync/v1/cachesync.proto`) serves from the same
//! [`ApiState`]: its calls go through the row write, row read and bearer check here, so
//! both APIs validate, write and refuse alike.
//!
//! Request values are checked against the column's declared type
//! ([`crate::model::params`]) and reach MySQL only as statement parameters
//! ([`crate::mysql::write`]). Every error is
//! `{"error": "<message>"}` with the status [`status_of`] picks; the messages name the
//! column or table at fault.

pub mod config;
mod deadline;
pub mod error;
pub mod grpc;
pub mod openapi;
mod read;
pub mod ready;
pub mod schema;
mod server;
mod snapshots;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use self::config::Limits;
pub use self::error::{ApiError, status_of};
pub use self::ready::Readiness;
use crate::error::{Error, Result};
use crate::model::table::SyncedTable;
use crate::mysql::schema::Replanner;
use crate::read::ReadPath;
use crate::redis::Applier;
use crate::strategy::{Strategy, SyncStrategy};

/// Largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long `/readyz` waits for each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the API serves from.
pub struct ApiState {
    strategy: Arc<Strategy>,
    /// By `database.table`; a plan is replaced when a DDL changed its table
    /// ([`ApiState::refresh`]).
    tables: std::sync::RwLock<HashMap<String, Arc<SyncedTable>>>,
    /// Re-plans a table after a DDL ([`ApiState::refresh`]).
    replanner: Replanner,
    token: Option<String>,
    readiness: Readiness,
    /// Writes in flight, which outlive a client that hangs up.
    writes: TaskTracker,
    /// The read path behind `GET`: given, or built on the first read from the readiness
    /// check's MySQL pool and Redis URL (so a sidecar that is never read connects nothing).
    reads: tokio::sync::OnceCell<Arc<ReadPath>>,
}

impl ApiState {
    /// Writes go through `strategy` to `tables`; when `token` is set every route but the
    /// public ones (`/healthz`, `/openapi.json`: [`Access::Public`]) needs
    /// `Authorization: Bearer <token>`.
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
            tables: std::sync::RwLock::new(tables.into_iter().map(|t| (t.name(), t)).collect()),
            replanner: Replanner::new(readiness.pool.clone(), &readiness.mysql_url),
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
                    self.strategy.kind().name(),
                )
                .await?;
                let mut tables = self.all_tables();
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

/// What every request passes before its route.
#[derive(Debug, Clone, Copy)]
pub struct Guards {
    /// How long a request may take to send its body once its head arrived.
    pub body_timeout: Duration,
    /// Answer only requests whose `Host` names this machine (`localhost`, a loopback
    /// address): for a tokenless API on loopback, so a web page whose host name was
    /// rebound to 127.0.0.1 (DNS rebinding) cannot drive it from a browser.
    pub loopback_hosts_only: bool,
}

impl ApiState {
    /// Whether requests need a bearer token (`api.token`).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Once an API stopped taking requests: waits for the writes they started, which
    /// outlive a client that hung up.
    async fn writes_finished(&self) {
        self.writes.close();
        self.writes.wait().await;
    }

    /// The plan of `name` (`database.table`) as the API knows it now.
    fn table(&self, name: &str) -> Option<Arc<SyncedTable>> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.get(name).cloned()
    }

    fn all_tables(&self) -> Vec<Arc<SyncedTable>> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.values().cloned().collect()
    }

    /// The names of the configured tables, sorted (for messages).
    fn table_names(&self) -> Vec<String> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = tables.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// After a request met something that suggests `seen`'s table changed shape (a column
    /// the plan does not know, MySQL's "unknown column", a value that does not decode):
    /// reads the table's schema again and, when a DDL changed it, re-plans it for every
    /// later request, the read path included. Returns the plan to use now (see
    /// [`Replanner`] for the rate limit and what keeps the old plan).
    async fn refresh(&self, seen: &Arc<SyncedTable>) -> Arc<SyncedTable> {
        let name = seen.name();
        let current = self.table(&name).unwrap_or_else(|| seen.clone());
        if !Arc::ptr_eq(&current, seen) {
            // Another request refreshed it meanwhile.
            return current;
        }
        let Some(plan) = self.replanner.replan(seen).await else {
            return current;
        };
        let plan = Arc::new(plan);
        self.tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, plan.clone());
        if let Some(reads) = self.reads.get() {
            reads.replace_table(plan.clone());
        }
        plan
    }
}

/// One route of the API: what [`router`] serves and what the OpenAPI document
/// ([`openapi`]) must describe.
pub struct Route {
    /// `GET`, `PUT`, …
    pub method: &'static str,
    /// The path in axum's syntax, which is OpenAPI's too (`{table}`).
    pub path: &'static str,
    pub access: Access,
    handler: fn() -> MethodRouter<Arc<ApiState>>,
}

/// Whether a [`Route`] needs the bearer token (when `api.token` is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Needs `Authorization: Bearer <api.token>`.
    Token,
    /// Answered without it (`/healthz`, `/openapi.json`).
    Public,
}

const ROWS: &str = "/v1/tables/{table}/rows";
const SNAPSHOTS: &str = "/v1/snapshots";

/// Every route the API serves. [`router`] is built from this list alone, and the
/// OpenAPI test (`tests/api.rs`) checks that the document describes each entry and that
/// each path of the document answers: a route added here without its `#[utoipa::path]`
/// in [`openapi`] fails that test. Add routes here, never with `Router::route`.
pub static ROUTES: &[Route] = &[
    Route::new("GET", ROWS, Access::Token, || get(read::read)),
    Route::new("PUT", ROWS, Access::Token, || put(write::upsert)),
    Route::new("DELETE", ROWS, Access::Token, || delete(write::delete)),
    Route::new("POST", SNAPSHOTS, Access::Token, || post(snapshots::start)),
    Route::new("GET", SNAPSHOTS, Access::Token, || get(snapshots::list)),
    Route::new("GET", "/readyz", Access::Token, || get(ready::readyz)),
    // A probe must answer without credentials.
    Route::new("GET", "/healthz", Access::Public, || get(ready::healthz)),
    // Public like /healthz: it describes the API and holds no data, and a client
    // generator or a mesh's catalogue should be able to fetch it before it has a token.
    Route::new("GET", "/openapi.json", Access::Public, || {
        get(openapi::serve)
    }),
];

impl Route {
    const fn new(
        method: &'static str,
        path: &'static str,
        access: Access,
        handler: fn() -> MethodRouter<Arc<ApiState>>,
    ) -> Route {
        Route {
            method,
            path,
            access,
            handler,
        }
    }
}

/// The API's routes on `state`, behind `guards`.
pub fn router(state: Arc<ApiState>, guards: Guards) -> Router {
    let (mut guarded, mut public) = (Router::new(), Router::new());
    for route in ROUTES {
        // Routes on one path merge into one method router (axum joins their methods).
        if route.access == Access::Public {
            public = public.route(route.path, (route.handler)());
        } else {
            guarded = guarded.route(route.path, (route.handler)());
        }
    }
    guarded
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .merge(public)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(guards, guard))
        .with_state(state)
}

/// [`Guards`]: the `Host` check (not for `/healthz`: a probe's answer tells a rebinding
/// page nothing) and the body deadline.
async fn guard(State(guards): State<Guards>, request: Request, next: Next) -> Response {
    if guards.loopback_hosts_only
        && request.uri().path() != "/healthz"
        && let Some(host) = request.headers().get(header::HOST)
        && !host.to_str().is_ok_and(is_loopback_host)
    {
        let shown = String::from_utf8_lossy(host.as_bytes()).into_owned();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host {shown:?} is not a loopback name: an API without api.token answers only \
                 requests addressed to localhost or a loopback address (a guard against DNS \
                 rebinding); set api.token to serve other names"
            ),
        )
        .into_response();
    }
    let limit = guards.body_timeout;
    next.run(request.map(|body| Body::new(deadline::DeadlineBody::new(body, limit))))
        .await
}

/// Whether a `Host` header value (`name[:port]`, `[v6]:port`) names this machine.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Binds the API's listener; the error names `api.listen`.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    bind_for("api.listen", listen).await
}

/// Binds the listener the config key `key` asks for; the error names the key.
async fn bind_for(key: &str, listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|source| Error::Io {
        context: format!("{key}: cannot listen on {listen}"),
        source,
    })
}

/// The address `listener` (bound for the config key `key`) listens on.
fn bound_address(key: &str, listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Io {
        context: format!("{key}: reading the bound address"),
        source,
    })
}

/// Serves the API on `listener` with the default [`Limits`] until `shutdown` is
/// cancelled (see [`serve_with`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_with(listener, state, shutdown, Limits::default()).await
}

/// Serves the API on `listener` within `limits` until `shutdown` is cancelled, then
/// finishes the requests in flight and the writes they started, and returns. A
/// tokenless API on a loopback address answers only requests addressed to a loopback
/// name ([`Guards::loopback_hosts_only`]).
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
    limits: Limits,
) -> Result<()> {
    let addr = bound_address("api.listen", &listener)?;
    info!(
        listen = %addr,
        token = state.has_token(),
        max_connections = limits.max_connections,
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        body_timeout_ms = limits.body_timeout.as_millis() as u64,
        "write API listening"
    );
    if !addr.ip().is_loopback() && state.token.is_none() {
        warn!(
            listen = %addr,
            "api.listen is not a loopback address and api.token is not set \
             (api.allow_unauthenticated_remote): anyone who reaches it can write"
        );
    }
    let guards = Guards {
        body_timeout: limits.body_timeout,
        loopback_hosts_only: addr.ip().is_loopback() && state.token.is_none(),
    };
    server::serve(listener, router(state.clone(), guards), limits, shutdown).await;
    state.writes_finished().await;
    Ok(())
}

/// Requires the bearer token on the routes it wraps, when one is configured.
async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let given = request.headers().get(header::AUTHORIZATION);
    match state.check_bearer(given.map(|h| h.as_bytes())) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

impl ApiState {
    /// Whether `authorization` (the `Authorization` header or the gRPC metadata of that
    /// name, when sent) carries `Bearer <api.token>`, when a token is configured; the
    /// one check both APIs make, with a 401 that says what to send.
    pub(crate) fn check_bearer(
        &self,
        authorization: Option<&[u8]>,
    ) -> std::result::Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let given = authorization
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match given {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send Authorization: Bearer <api.token>",
            )),
            Some(token) if !same_secret(token.as_bytes(), expected.as_bytes()) => Err(
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token"),
            ),
            Some(_) => Ok(()),
        }
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

async fn not_found(uri: Uri) -> ApiError {
    let routes: Vec<String> = ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {}; routes: {} ({{table}} is database.table; GET /openapi.json \
             describes them)",
            uri.path(),
            routes.join(", ")
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_localhost_and_loopback_addresses() {
        for host in [
            "localhost",
            "LOCALHOST:8480",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8480",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8480",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8480",
            "localhost.attacker.example",
            "10.0.0.1:8480",
            "[::2]:8480",
            "0.0.0.0",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
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
