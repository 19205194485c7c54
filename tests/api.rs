//! The sidecar HTTP write API (`cachesync::api`) against real MariaDB and Redis, with the
//! dual-write strategy built in-process and the API served on `127.0.0.1:0`:
//!
//! - upserts and deletes through the API land in MySQL, and Redis holds exactly what a
//!   `SELECT` of the committed row encodes to (DECIMAL, DATETIME(6), VARBINARY sent as
//!   base64, a JSON column, utf8mb4 emoji);
//! - SQL-injection-shaped values (quotes, backslashes, a NUL byte, `'); DROP TABLE …`) are
//!   stored verbatim in both;
//! - every error answers JSON `{"error": …}` with its status — unknown table 404; unknown
//!   column, missing primary key, wrong type, invalid base64, body not JSON / not an
//!   object, a too-long VARCHAR (the server's message) 400; a duplicate on a UNIQUE
//!   secondary index 409; an oversized body 413; missing or wrong bearer token 401;
//!   MySQL unreachable 503 — and writes nothing;
//! - `/healthz`, and `/readyz` naming the dependency that is down (password redacted);
//! - `/openapi.json` (no token needed) is OpenAPI 3.x describing exactly the routes the
//!   router serves (`api::ROUTES`), each operation answered and secured as described;
//! - `cachesync run` with an `[api]` section serves writes and stops on SIGTERM, and a
//!   taken `api.listen` fails the start naming the key.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database, key prefix and
//! listener.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cachesync::api;
use cachesync::model::cell::Encoded;
use common::api_state::Setup;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};

const TABLE_SQL: &str = "CREATE TABLE items (
    id BIGINT UNSIGNED PRIMARY KEY,
    sku VARCHAR(16) NOT NULL,
    name VARCHAR(255) NOT NULL DEFAULT '',
    price DECIMAL(10,2) NOT NULL DEFAULT 0,
    seen_at DATETIME(6) NULL,
    raw VARBINARY(32) NULL,
    doc JSON NULL,
    qty INT NOT NULL DEFAULT 0,
    version BIGINT UNSIGNED NOT NULL DEFAULT 1,
    UNIQUE KEY sku (sku)
) CHARACTER SET utf8mb4";

/// The HTTP side of a fixture: the API's base URL and a client.
struct Http {
    base: String,
    http: reqwest::Client,
}

type Fixture = common::api_state::Fixture<Http>;

async fn fixture(setup: Setup) -> Fixture {
    let (served, state) = common::api_state::dual_write("api", TABLE_SQL, setup).await;
    Fixture::start(
        served,
        |listener, shutdown| api::serve(listener, state, shutdown),
        async |addr| Http {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        },
    )
    .await
}

/// An answer: status, and the body as JSON (`Json::Null` when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Json,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Asserts an error answer: `status`, JSON `{"error": …}` containing `needle`.
    fn assert_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{self:?}"
        );
        let message = self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {self:?}"));
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

impl Fixture {
    fn rows_url(&self) -> String {
        format!("{}/v1/tables/{}/rows", self.api.base, self.table_name())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Json::Null),
            headers,
        }
    }

    async fn put(&self, body: Json) -> Answer {
        self.send(self.api.http.put(self.rows_url()).json(&body))
            .await
    }

    async fn put_raw(&self, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.api
                .http
                .put(self.rows_url())
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn delete(&self, body: Json) -> Answer {
        self.send(self.api.http.delete(self.rows_url()).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.api.http.get(format!("{}{path}", self.api.base)))
            .await
    }

    /// What Redis should hold for row `id`: the SELECT of the committed row, encoded.
    async fn expected(&mut self, id: u64) -> Option<Vec<u8>> {
        let select = format!("{} WHERE id = ?", self.table.sql.select_all);
        let row: Option<mysql_async::Row> = self.db.conn.exec_first(select, (id,)).await.unwrap();
        let cells = self.table.decode_sql_row(&row?).unwrap();
        match self
            .table
            .encoder
            .encode(&cells, self.table.version_of(&cells))
        {
            Encoded::Json(bytes) => Some(bytes),
            Encoded::Hash(_) => unreachable!("json table"),
        }
    }

    /// Nothing reached MySQL or Redis for row `id`.
    async fn assert_untouched(&mut self, id: u64) {
        assert_eq!(self.expected(id).await, None, "row {id} is not in MySQL");
        assert_eq!(self.cached(id).await, None, "row {id} is not in Redis");
    }
}

#[tokio::test]
async fn upsert_and_delete_land_in_mysql_and_redis_as_select_encodes_them() {
    let mut f = fixture(Setup::default()).await;
    let raw = [0u8, 1, 255, 0];
    let answer = f
        .put(json!({
            "id": 1,
            "sku": "A-1",
            "name": "café ☕ 🎉",
            "price": "12.5",
            "seen_at": "2024-02-29 23:59:59.123456",
            "raw": base64::engine::general_purpose::STANDARD.encode(raw),
            "doc": {"b": [1, 2.5, null], "a": "ü"},
            "qty": 3,
        }))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["table"], f.table_name());
    assert_eq!(answer.body["op"], "upsert");
    assert_eq!(
        answer.body["version"], 1,
        "the default version is read back"
    );
    assert_eq!(
        answer.body["redis"],
        json!({"written": 1, "replayed": 0, "stale": 0})
    );
    assert!(answer.body["committed_at_us"].as_u64().unwrap() > 1_600_000_000_000_000);

    let expected = f.expected(1).await.expect("the row is in MySQL");
    assert_eq!(
        String::from_utf8(expected.clone()).unwrap(),
        r#"{"_cachesync_v":1,"id":1,"sku":"A-1","name":"café ☕ 🎉","price":"12.50","seen_at":"2024-02-29 23:59:59.123456","raw":"AAH/AA==","doc":{"a":"ü","b":[1,2.5,null]},"qty":3,"version":1}"#
    );
    assert_eq!(f.cached(1).await, Some(expected), "Redis = SELECT, encoded");
    let stored: Vec<u8> =
        f.db.conn
            .query_first("SELECT raw FROM items WHERE id = 1")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored, raw, "base64 in, bytes in MySQL");

    // An update: DECIMAL as a JSON number, NULLs, a newer version.
    let answer = f
        .put(json!({"id": 1, "sku": "A-1", "price": 7, "raw": null, "doc": null, "version": 2}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["version"], 2);
    let expected = f.expected(1).await.unwrap();
    let text = String::from_utf8(expected.clone()).unwrap();
    assert!(
        text.contains(
            r#""price":"7.00","seen_at":"2024-02-29 23:59:59.123456","raw":null,"doc":null"#
        ),
        "{text}"
    );
    assert_eq!(f.cached(1).await, Some(expected));

    let answer = f.delete(json!({"id": 1})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["op"], "delete");
    assert_eq!(answer.body["redis"]["written"], 1);
    f.assert_untouched(1).await;
    f.finish().await;
}

#[tokio::test]
async fn injection_shaped_values_are_stored_verbatim() {
    let mut f = fixture(Setup::default()).await;
    let nasty = [
        "'); DROP TABLE items; --",
        "\\'; DELETE FROM items WHERE '1'='1",
        "back\\slash \\\\ \"dq\" 'sq' `bt` %_",
        "nul\0byte",
        "\\0 \\n \\Z ; -- /* */ #",
    ];
    for (i, value) in nasty.iter().enumerate() {
        let id = i as u64 + 1;
        let answer = f
            .put(json!({"id": id, "sku": format!("s{id}"), "name": value, "doc": {"k": value}}))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{value:?}: {answer:?}");
    }
    assert_eq!(
        f.row_count().await,
        nasty.len() as u64,
        "the table survived"
    );
    for (i, value) in nasty.iter().enumerate() {
        let id = i as u64 + 1;
        let name: Vec<u8> =
            f.db.conn
                .exec_first("SELECT name FROM items WHERE id = ?", (id,))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            name,
            value.as_bytes(),
            "MySQL holds {value:?} byte for byte"
        );
        let expected = f.expected(id).await.unwrap();
        let cached = f.cached(id).await.unwrap();
        assert_eq!(cached, expected, "Redis = SELECT, encoded, for {value:?}");
        let cached: Json = serde_json::from_slice(&cached).unwrap();
        assert_eq!(cached["name"], *value);
        assert_eq!(cached["doc"]["k"], *value);
    }
    // Injection shapes in names are names: not a column, not a table.
    f.put(json!({"id": 9, "sku": "x", "name`='x'; DROP TABLE items; --": "v"}))
        .await
        .assert_error(400, "name`='x'; DROP TABLE items; --");
    let url = format!(
        "{}/v1/tables/{}.items%60%3B%20DROP%20TABLE%20items/rows",
        f.api.base, f.db.name
    );
    f.send(f.api.http.put(url).json(&json!({"id": 9, "sku": "x"})))
        .await
        .assert_error(404, "unknown table");
    assert_eq!(f.row_count().await, nasty.len() as u64);
    f.finish().await;
}

#[tokio::test]
async fn unknown_table_is_404() {
    let mut f = fixture(Setup::default()).await;
    for name in ["nope.items".to_owned(), format!("{}.other", f.db.name)] {
        let url = format!("{}/v1/tables/{name}/rows", f.api.base);
        f.send(f.api.http.put(&url).json(&json!({"id": 1, "sku": "x"})))
            .await
            .assert_error(404, &format!("unknown table {name}"));
        f.send(f.api.http.delete(&url).json(&json!({"id": 1})))
            .await
            .assert_error(404, &f.table_name());
    }
    f.get("/v1/nothing").await.assert_error(404, "no route");
    f.assert_untouched(1).await;
    f.finish().await;
}

#[tokio::test]
async fn unknown_column_is_400_naming_it() {
    let mut f = fixture(Setup::default()).await;
    f.put(json!({"id": 1, "sku": "x", "colour": "red"}))
        .await
        .assert_error(400, "colour is not a column of");
    f.delete(json!({"id": 1, "colour": "red"}))
        .await
        .assert_error(400, "colour is not a column of");
    f.assert_untouched(1).await;
    f.finish().await;
}

#[tokio::test]
async fn missing_or_null_primary_key_is_400() {
    let mut f = fixture(Setup::default()).await;
    f.put(json!({"sku": "x", "name": "no id"}))
        .await
        .assert_error(400, "primary-key column id");
    f.put(json!({"id": null, "sku": "x"}))
        .await
        .assert_error(400, "primary-key column id");
    f.delete(json!({}))
        .await
        .assert_error(400, "primary-key column id");
    f.delete(json!({"id": 1, "sku": "x"}))
        .await
        .assert_error(400, "sku is not part of it");
    assert_eq!(f.row_count().await, 0);
    f.finish().await;
}

#[tokio::test]
async fn wrong_types_are_400_naming_the_column() {
    let mut f = fixture(Setup::default()).await;
    let cases = [
        (json!({"id": 1, "sku": "x", "qty": "7"}), "column qty"),
        (json!({"id": 1, "sku": "x", "qty": 1.5}), "column qty"),
        (
            json!({"id": 1, "sku": "x", "qty": 2_147_483_648u64}),
            "out of range",
        ),
        (json!({"id": -1, "sku": "x"}), "column id"),
        (json!({"id": 1, "sku": 42}), "column sku"),
        (
            json!({"id": 1, "sku": "x", "name": {"a": 1}}),
            "column name",
        ),
        (json!({"id": 1, "sku": "x", "name": ["a"]}), "column name"),
        (
            json!({"id": 1, "sku": "x", "price": "12,50"}),
            "column price",
        ),
        (
            json!({"id": 1, "sku": "x", "raw": "@@not base64@@"}),
            "invalid base64",
        ),
        (json!({"id": 1, "sku": "x", "raw": "AAH"}), "column raw"),
    ];
    for (body, needle) in cases {
        f.put(body.clone()).await.assert_error(400, needle);
    }
    // Values the server itself refuses (strict mode) come back with its message.
    f.put(json!({"id": 1, "sku": "x", "seen_at": "2024-13-45 00:00:00"}))
        .await
        .assert_error(400, "seen_at");
    f.assert_untouched(1).await;
    f.finish().await;
}

#[tokio::test]
async fn body_not_a_json_object_is_400() {
    let mut f = fixture(Setup::default()).await;
    f.put_raw("not json").await.assert_error(400, "not JSON");
    f.put_raw("").await.assert_error(400, "not JSON");
    f.put_raw(r#"{"id": 1, "sku": "x""#)
        .await
        .assert_error(400, "not JSON");
    f.put_raw(r#"[{"id": 1, "sku": "x"}]"#)
        .await
        .assert_error(400, "must be a JSON object");
    f.put_raw(r#""id=1""#)
        .await
        .assert_error(400, "must be a JSON object");
    f.assert_untouched(1).await;
    f.finish().await;
}

#[tokio::test]
async fn too_long_varchar_is_400_with_the_server_message() {
    let mut f = fixture(Setup::default()).await;
    f.put(json!({"id": 1, "sku": "x".repeat(17)}))
        .await
        .assert_error(400, "Data too long for column 'sku'");
    f.assert_untouched(1).await;
    f.finish().await;
}

#[tokio::test]
async fn duplicate_on_a_unique_secondary_index_is_409() {
    let mut f = fixture(Setup::default()).await;
    for (id, sku) in [(1, "SAME"), (2, "OTHER")] {
        let answer = f
            .put(json!({"id": id, "sku": sku, "name": "original"}))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    let before = (f.expected(1).await, f.expected(2).await);
    // A new primary key whose UNIQUE value is taken: `ON DUPLICATE KEY UPDATE` fires on
    // the other row's key, which must neither be overwritten nor reported as success.
    let answer = f
        .put(json!({"id": 3, "sku": "SAME", "name": "overwrites row 1?"}))
        .await;
    answer.assert_error(409, "unique");
    // An existing primary key updated to a taken UNIQUE value: the server's message.
    f.put(json!({"id": 2, "sku": "SAME", "name": "overwrites row 2?"}))
        .await
        .assert_error(409, "Duplicate entry 'SAME'");
    f.assert_untouched(3).await;
    assert_eq!(
        (f.expected(1).await, f.expected(2).await),
        before,
        "rows 1 and 2 unchanged"
    );
    assert_eq!(f.cached(1).await, before.0, "Redis row 1 unchanged");
    assert_eq!(f.cached(2).await, before.1, "Redis row 2 unchanged");
    f.finish().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let mut f = fixture(Setup::default()).await;
    let body = format!(
        r#"{{"id": 1, "sku": "x", "name": "{}"}}"#,
        "y".repeat(api::BODY_LIMIT)
    );
    f.put_raw(body).await.assert_error(413, "length limit");
    f.assert_untouched(1).await;
    // Just under the limit is accepted (and then refused by the column's length).
    let body = format!(r#"{{"id": 1, "sku": "x", "name": "{}"}}"#, "y".repeat(1000));
    f.put_raw(body)
        .await
        .assert_error(400, "Data too long for column 'name'");
    f.finish().await;
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let mut f = fixture(Setup {
        token: Some("s3cret-token"),
        ..Setup::default()
    })
    .await;
    let body = json!({"id": 1, "sku": "x"});
    f.send(f.api.http.put(f.rows_url()).json(&body))
        .await
        .assert_error(401, "missing bearer token");
    for wrong in [
        "Bearer s3cret-tokem",
        "Bearer s3cret-token2",
        "Bearer ",
        "Basic s3cret-token",
        "s3cret-token",
    ] {
        let answer = f
            .send(
                f.api
                    .http
                    .put(f.rows_url())
                    .header("authorization", wrong)
                    .json(&body),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{wrong:?}: {answer:?}"
        );
        assert_eq!(answer.headers.get("www-authenticate").unwrap(), "Bearer");
    }
    f.send(f.api.http.get(format!("{}/readyz", f.api.base)))
        .await
        .assert_error(401, "bearer token");
    f.assert_untouched(1).await;

    let answer = f
        .send(
            f.api
                .http
                .put(f.rows_url())
                .bearer_auth("s3cret-token")
                .json(&body),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(f.cached(1).await.is_some());
    let health = f.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "/healthz needs no token");
    f.finish().await;
}

#[tokio::test]
async fn healthz_and_readyz_report_ok() {
    let f = fixture(Setup::default()).await;
    let health = f.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, json!({"status": "ok"}));
    let ready = f.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    assert_eq!(
        ready.body,
        json!({"status": "ready", "mysql": "ok", "redis": "ok"})
    );
    f.finish().await;
}

/// The methods an OpenAPI path item can hold.
const OPENAPI_METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_the_router_serves() {
    const TOKEN: &str = "s3cret-token";
    let mut f = fixture(Setup {
        token: Some(TOKEN),
        ..Setup::default()
    })
    .await;
    f.db.exec("INSERT INTO items (id, sku) VALUES (1, 'a')")
        .await;

    // Public like /healthz: fetched without the token.
    let answer = f.get("/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let doc = answer.body;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "not OpenAPI 3.x: {version:?}");
    let paths = doc["paths"].as_object().expect("the document has paths");

    // (a) Every operation it describes is served: neither the router's 404 nor a 405,
    // and it needs the token exactly when the document says so.
    let mut described = Vec::new();
    for (path, item) in paths {
        for &method in OPENAPI_METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            described.push((method.to_uppercase(), path.clone()));
            let mut url = format!("{}{}", f.api.base, path.replace("{table}", &f.table_name()));
            if path.contains("{table}") && method == "get" {
                url.push_str("?id=1");
            }
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let request = || {
                let request = f.api.http.request(method.clone(), &url);
                match operation.get("requestBody") {
                    Some(_) => request.json(&json!({})),
                    None => request,
                }
            };
            let secured = operation.get("security").is_some();
            let without = f.send(request()).await;
            assert_eq!(
                without.status == StatusCode::UNAUTHORIZED,
                secured,
                "{method} {path} without a token (document says secured: {secured}): {without:?}"
            );
            let answer = f.send(request().bearer_auth(TOKEN)).await;
            let routed = answer.status != StatusCode::METHOD_NOT_ALLOWED
                && !(answer.status == StatusCode::NOT_FOUND
                    && answer.body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("no route")));
            assert!(
                routed,
                "{method} {path} is documented but not served: {answer:?}"
            );
        }
    }

    // (b) Every route the router serves (api::ROUTES, which it is built from) is
    // described.
    let undocumented: Vec<String> = api::ROUTES
        .iter()
        .filter(|r| !described.contains(&(r.method.to_owned(), r.path.to_owned())))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        undocumented.is_empty(),
        "routes without a #[utoipa::path] in api::openapi: {undocumented:?}"
    );
    assert_eq!(described.len(), api::ROUTES.len(), "{described:?}");

    // The refusal body every error answer names.
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["required"],
        json!(["error"])
    );
    f.finish().await;
}

#[tokio::test]
async fn readyz_is_503_naming_a_dead_redis_without_its_password() {
    let port = common::free_port();
    let f = fixture(Setup {
        readiness_redis_url: Some(format!("redis://:hunter2@127.0.0.1:{port}")),
        ..Setup::default()
    })
    .await;
    let ready = f.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert_eq!(ready.body["status"], "unavailable");
    assert_eq!(ready.body["mysql"], "ok");
    let redis = ready.body["redis"].as_str().unwrap();
    assert!(
        redis.starts_with(&format!(
            "cannot reach Redis at redis://:***@127.0.0.1:{port}"
        )),
        "{redis}"
    );
    assert!(!ready.body.to_string().contains("hunter2"), "{ready:?}");
    assert_eq!(f.get("/healthz").await.status, StatusCode::OK);
    f.finish().await;
}

#[tokio::test]
async fn mysql_unreachable_is_503_for_writes_and_readyz() {
    let port = common::free_port();
    let mut f = fixture(Setup {
        mysql_url: Some(format!("mysql://root:hunter2@127.0.0.1:{port}")),
        ..Setup::default()
    })
    .await;
    let answer = f.put(json!({"id": 1, "sku": "x"})).await;
    answer.assert_error(503, "connect");
    assert_eq!(answer.headers.get("retry-after").unwrap(), "1");
    let ready = f.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert_eq!(ready.body["redis"], "ok");
    let mysql = ready.body["mysql"].as_str().unwrap();
    assert!(
        mysql.starts_with(&format!(
            "cannot reach MySQL at mysql://root:***@127.0.0.1:{port}"
        )),
        "{mysql}"
    );
    assert!(!ready.body.to_string().contains("hunter2"));
    f.assert_untouched(1).await;
    f.finish().await;
}

/// `cachesync` with `args`, output to files in `dir`, no `CACHESYNC__` overrides.
fn cachesync(args: &[&str], dir: &std::path::Path) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachesync"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CACHESYNC__") {
            cmd.env_remove(name);
        }
    }
    cmd.spawn().expect("start cachesync")
}

/// Waits for `child` to exit within `limit`; kills it and fails on overrun.
fn wait_exit(child: &mut std::process::Child, limit: Duration, dir: &std::path::Path) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("still running after {limit:?}\n{}", stderr_of(dir));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
}

/// Polls `url` until it answers 200 (at most 30 s); fails early, with the daemon's stderr,
/// when the daemon exits.
async fn wait_for_ok(
    http: &reqwest::Client,
    child: &mut std::process::Child,
    url: &str,
    dir: &std::path::Path,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("cachesync run exited early ({status})\n{}", stderr_of(dir));
        }
        assert!(
            Instant::now() < deadline,
            "{url} not 200 within 30 s\n{}",
            stderr_of(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn api_config(db: &str, prefix: &str, api_port: u16) -> String {
    common::config_toml(
        "dual-write",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{api_port}\"\ntoken = \"daemon-token\"\n\
             [[tables]]\nname = \"{db}.items\"\nkey = \"{prefix}:item:{{id}}\"\n"
        ),
    )
}

#[tokio::test]
async fn the_daemon_serves_the_api_and_stops_on_sigterm() {
    let mut db = common::TestDb::create("apid").await;
    db.exec(TABLE_SQL).await;
    let prefix = common::unique("apid");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = common::write_config(dir.path(), &api_config(&db.name, &prefix, port));
    let mut child = cachesync(&["run", "--config", config.to_str().unwrap()], dir.path());
    let http = reqwest::Client::new();
    wait_for_ok(
        &http,
        &mut child,
        &format!("http://127.0.0.1:{port}/healthz"),
        dir.path(),
    )
    .await;
    let answer = http
        .put(format!(
            "http://127.0.0.1:{port}/v1/tables/{}.items/rows",
            db.name
        ))
        .bearer_auth("daemon-token")
        .json(&json!({"id": 7, "sku": "d-7", "name": "through the daemon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let mut redis = common::redis_conn().await;
    let cached: Option<String> = redis.get(format!("{prefix}:item:7")).await.unwrap();
    let cached: Json = serde_json::from_str(&cached.expect("the row is in Redis")).unwrap();
    assert_eq!(cached["name"], "through the daemon");
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .bearer_auth("daemon-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let code = wait_exit(&mut child, Duration::from_secs(10), dir.path());
    let stderr = stderr_of(dir.path());
    assert_eq!(code, 0, "exit 0 after SIGTERM\n{stderr}");
    assert!(stderr.contains("write API listening"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        !stderr.contains("daemon-token"),
        "the token is never logged\n{stderr}"
    );
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_taken_api_listen_address_fails_the_start_naming_the_key() {
    let mut db = common::TestDb::create("apib").await;
    db.exec(TABLE_SQL).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), &api_config(&db.name, "apib", port));
    let mut child = cachesync(&["run", "--config", config.to_str().unwrap()], dir.path());
    let code = wait_exit(&mut child, Duration::from_secs(30), dir.path());
    let stderr = stderr_of(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with(&format!(
            "error: api.listen: cannot listen on 127.0.0.1:{port}: "
        ))),
        "{stderr}"
    );
    drop(taken);
    db.drop_db().await;
}

#[tokio::test]
async fn the_daemon_serves_mq_writes_through_the_api_into_redis() {
    let mut db = common::TestDb::create("apimq").await;
    db.exec(TABLE_SQL).await;
    let prefix = common::unique("apimq");
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let toml = common::config_toml(
        "mq",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n\
             [[tables]]\nname = \"{db}.items\"\nkey = \"{prefix}:item:{{id}}\"\n",
            db = db.name
        ),
    )
    .replace(
        "[amqp]\n",
        &format!(
            "[amqp]\nexchange = \"{prefix}.x\"\nqueue = \"{prefix}.q\"\n\
             dead_letter_queue = \"{prefix}.dead\"\noutbox_table = \"{}.outbox\"\n",
            db.name
        ),
    );
    let config = common::write_config(dir.path(), &toml);
    let mut child = cachesync(&["run", "--config", config.to_str().unwrap()], dir.path());
    let http = reqwest::Client::new();
    wait_for_ok(
        &http,
        &mut child,
        &format!("http://127.0.0.1:{port}/readyz"),
        dir.path(),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/v1/tables/{}.items/rows", db.name);
    let answer = http
        .put(&url)
        .json(&json!({"id": 9, "sku": "mq-9", "name": "through the broker"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "{}",
        answer.text().await.unwrap_or_default()
    );
    let receipt: Json = answer.json().await.unwrap();
    assert!(
        receipt["version"].as_u64().is_some(),
        "outbox writes carry the outbox id: {receipt}"
    );
    assert_eq!(
        receipt["redis"], "background",
        "the consumer, not the write, fills Redis"
    );

    // The consumer applies it: poll Redis (bounded), then compare with SELECT's encoding.
    let mut redis = common::redis_conn().await;
    let key = format!("{prefix}:item:9");
    let deadline = Instant::now() + Duration::from_secs(30);
    let cached = loop {
        if let Some(doc) = redis.get::<_, Option<String>>(&key).await.unwrap() {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the event never reached Redis\n{}",
            stderr_of(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Only to plan the table the way the daemon did.
    let config = common::config_with_table(
        "dual-write",
        json!({ "name": format!("{}.items", db.name), "key": format!("{prefix}:item:{{id}}") }),
    );
    let table = common::synced_table(&mut db, &config).await;
    let row: mysql_async::Row = db
        .conn
        .exec_first(format!("{} WHERE id = 9", table.sql.select_all), ())
        .await
        .unwrap()
        .unwrap();
    let Encoded::Json(expected) = table.encoder.encode(
        &table.decode_sql_row(&row).unwrap(),
        receipt["version"].as_u64(),
    ) else {
        unreachable!("json table")
    };
    assert_eq!(cached.as_bytes(), expected.as_slice());

    // Delete through the API: the key goes.
    let answer = http
        .delete(&url)
        .json(&json!({"id": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.exists::<_, bool>(&key).await.unwrap() {
        assert!(Instant::now() < deadline, "the delete never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(30), dir.path());
    assert_eq!(code, 0, "exit 0 after SIGTERM\n{}", stderr_of(dir.path()));
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
    common::delete_amqp_topology(&prefix).await;
}
