//! The gRPC API (`cachesync::api::grpc`, `proto/cachesync/v1/cachesync.proto`) against
//! real MariaDB and Redis, with a real tonic client: the dual-write strategy built
//! in-process and the gRPC API served on `127.0.0.1:0`, and `cachesync run` with a
//! `[grpc]` section.
//!
//! - `Put`, `Get`, `Delete` land in MySQL and Redis as the HTTP API's writes do, and
//!   numbers keep their exact text (a BIGINT UNSIGNED above 2^53, a DECIMAL(30,10));
//! - `BatchGet` answers in key order, a missing row as `found: false`;
//! - the `Write` stream answers in request order with each id, a failed write as a result
//!   with its error, runs at most `max_in_flight` writes at once (counted in MySQL while
//!   they wait on a row lock), and ends with UNAVAILABLE at the server's shutdown instead
//!   of holding it;
//! - every error code of the contract: INVALID_ARGUMENT naming the column, NOT_FOUND,
//!   FAILED_PRECONDITION for a UNIQUE collision, UNAUTHENTICATED without or with a wrong
//!   token, UNAVAILABLE with MySQL or Redis down; malformed protobuf and a message over
//!   `max_message_bytes` are refused and the server goes on;
//! - `grpc.health.v1` answers SERVING and reflection lists `cachesync.v1.CacheSync`;
//! - the daemon serves gRPC next to the HTTP API, stops on SIGTERM, and a second daemon
//!   whose `grpc.listen` is taken fails its start naming the key.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database, key prefix and
//! listener.

mod common;

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use cachesync::api::grpc::pb::cache_sync_client::CacheSyncClient;
use cachesync::api::grpc::{self, GrpcConfig, pb};
use common::api_state::Setup;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use serde_json::{Value as Json, json};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const TABLE_SQL: &str = "CREATE TABLE items (
    id BIGINT UNSIGNED PRIMARY KEY,
    sku VARCHAR(16) NOT NULL,
    amount DECIMAL(30,10) NOT NULL DEFAULT 0,
    note VARCHAR(64) NOT NULL DEFAULT '',
    version BIGINT UNSIGNED NOT NULL DEFAULT 1,
    UNIQUE KEY sku (sku)
) CHARACTER SET utf8mb4";

/// The gRPC side of a fixture: a connection and the CacheSync client on it.
struct Grpc {
    client: CacheSyncClient<Channel>,
    channel: Channel,
}

type Fixture = common::api_state::Fixture<Grpc>;

/// The gRPC API with the default `[grpc]` limits on what `setup` says.
async fn fixture(setup: Setup) -> Fixture {
    fixture_with(setup, GrpcConfig::default()).await
}

async fn fixture_with(setup: Setup, limits: GrpcConfig) -> Fixture {
    let (served, state) = common::api_state::dual_write("grpc", TABLE_SQL, setup).await;
    Fixture::start(
        served,
        |listener, shutdown| grpc::serve(listener, state, limits, shutdown),
        async |addr| {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .expect("the gRPC API accepts a connection");
            Grpc {
                client: CacheSyncClient::new(channel.clone()),
                channel,
            }
        },
    )
    .await
}

/// Asserts that the health service answers SERVING for `service` ("" is the server).
async fn assert_serving(channel: &Channel, service: &str) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving,
        "{service:?}"
    );
}

impl Fixture {
    async fn put(&mut self, row: Json) -> Result<pb::WriteReceipt, Status> {
        let request = pb::PutRequest {
            table: self.table_name(),
            row_json: row.to_string(),
        };
        self.api
            .client
            .put(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// The results of a `Write` stream of `requests`.
    async fn write(
        &mut self,
        requests: Vec<pb::WriteRequest>,
    ) -> tonic::Streaming<pb::WriteResult> {
        self.api
            .client
            .write(stream_of(requests))
            .await
            .unwrap()
            .into_inner()
    }

    /// Row `id` as `Get` answers it: `row_json` as sent.
    async fn get(&mut self, id: &str) -> Result<String, Status> {
        let request = pb::GetRequest {
            table: self.table_name(),
            key: [("id".to_owned(), id.to_owned())].into(),
        };
        Ok(self.api.client.get(request).await?.into_inner().row_json)
    }
}

/// Asserts that `result` failed with `code` and a message containing `needle`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{needle:?} not in {:?}",
        status.message()
    );
}

#[tokio::test]
async fn put_get_delete_keep_exact_numbers_in_mysql_and_redis() {
    let mut f = fixture(Setup::default()).await;
    // Above 2^53 and with 30 significant digits: a double (google.protobuf.Struct) would
    // round both; JSON text keeps them.
    let big = "18446744073709551615";
    let row = format!(
        r#"{{"id": {big}, "sku": "A-1", "amount": 12345678901234567890.1234567891, "note": "café ☕"}}"#
    );
    let receipt = f
        .api
        .client
        .put(pb::PutRequest {
            table: f.table_name(),
            row_json: row,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.table, f.table_name());
    assert_eq!(receipt.op(), pb::Op::Upsert);
    assert_eq!(receipt.redis(), pb::RedisState::Applied);
    assert_eq!(
        receipt.applied,
        Some(pb::Applied {
            written: 1,
            replayed: 0,
            stale: 0
        })
    );
    assert_eq!(receipt.version, Some(1), "the default version is read back");
    assert!(receipt.committed_at_us > 1_600_000_000_000_000);

    let amount: String =
        f.db.conn
            .query_first(format!(
                "SELECT CAST(amount AS CHAR) FROM items WHERE id = {big}"
            ))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(amount, "12345678901234567890.1234567891");
    let cached = String::from_utf8(f.cached(big).await.expect("the row is in Redis")).unwrap();
    assert_eq!(
        cached,
        format!(
            r#"{{"_cachesync_v":1,"id":{big},"sku":"A-1","amount":"12345678901234567890.1234567891","note":"café ☕","version":1}}"#
        )
    );
    let row = f.get(big).await.unwrap();
    assert_eq!(
        row,
        common::converge::strip_version(&cached),
        "Get answers what Redis holds, without cachesync's version"
    );

    let receipt = f
        .api
        .client
        .delete(pb::DeleteRequest {
            table: f.table_name(),
            key_json: format!(r#"{{"id": {big}}}"#),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.op(), pb::Op::Delete);
    assert_eq!(f.row_count().await, 0);
    assert_status(f.get(big).await, Code::NotFound, &format!("id={big}"));
    f.finish().await;
}

#[tokio::test]
async fn batch_get_answers_in_key_order() {
    let mut f = fixture(Setup::default()).await;
    for id in [1, 2] {
        f.put(json!({"id": id, "sku": format!("s-{id}"), "note": format!("row {id}")}))
            .await
            .unwrap();
    }
    let key = |id: &str| pb::Key {
        columns: [("id".to_owned(), id.to_owned())].into(),
    };
    let rows = f
        .api
        .client
        .batch_get(pb::BatchGetRequest {
            table: f.table_name(),
            keys: vec![key("2"), key("99"), key("1")],
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    let found: Vec<(bool, Json)> = rows
        .iter()
        .map(|r| {
            let row = serde_json::from_str(&r.row_json).unwrap_or(Json::Null);
            (r.found, row["note"].clone())
        })
        .collect();
    assert_eq!(
        found,
        [
            (true, json!("row 2")),
            (false, Json::Null),
            (true, json!("row 1"))
        ]
    );

    // The key at fault is named by its index.
    let bad = pb::Key {
        columns: [("nope".to_owned(), "1".to_owned())].into(),
    };
    assert_status(
        f.api
            .client
            .batch_get(pb::BatchGetRequest {
                table: f.table_name(),
                keys: vec![key("1"), bad],
            })
            .await,
        Code::InvalidArgument,
        "keys[1]: ",
    );
    let too_many = vec![key("1"); grpc::MAX_BATCH_KEYS + 1];
    assert_status(
        f.api
            .client
            .batch_get(pb::BatchGetRequest {
                table: f.table_name(),
                keys: too_many,
            })
            .await,
        Code::InvalidArgument,
        "at most 1000",
    );
    assert_status(
        f.api
            .client
            .batch_get(pb::BatchGetRequest {
                table: "nope.items".to_owned(),
                keys: vec![key("1")],
            })
            .await,
        Code::NotFound,
        "nope.items",
    );
    f.finish().await;
}

#[tokio::test]
async fn refused_writes_carry_the_contract_codes_and_write_nothing() {
    let mut f = fixture(Setup::default()).await;
    assert_status(
        f.put(json!({"id": 1, "sku": "a", "colour": "red"})).await,
        Code::InvalidArgument,
        "colour",
    );
    assert_status(
        f.put(json!({"id": 1, "sku": "a", "amount": "lots"})).await,
        Code::InvalidArgument,
        "amount",
    );
    assert_status(
        f.api
            .client
            .put(pb::PutRequest {
                table: f.table_name(),
                row_json: "[1, 2]".to_owned(),
            })
            .await,
        Code::InvalidArgument,
        "JSON object",
    );
    assert_status(
        f.api
            .client
            .put(pb::PutRequest {
                table: "nope.items".to_owned(),
                row_json: "{}".to_owned(),
            })
            .await,
        Code::NotFound,
        "unknown table nope.items",
    );
    assert_eq!(f.row_count().await, 0);

    f.put(json!({"id": 1, "sku": "taken"})).await.unwrap();
    assert_status(
        f.put(json!({"id": 2, "sku": "taken"})).await,
        Code::FailedPrecondition,
        "duplicate entry on a UNIQUE",
    );
    assert_eq!(f.row_count().await, 1);
    assert_eq!(f.cached(2).await, None);
    f.finish().await;
}

#[tokio::test]
async fn the_bearer_token_is_required_but_not_for_health() {
    let mut f = fixture(Setup {
        token: Some("s3cret"),
        ..Setup::default()
    })
    .await;
    let table = f.table_name();
    let put = |token: Option<&str>| {
        let mut request = Request::new(pb::PutRequest {
            table: table.clone(),
            row_json: json!({"id": 1, "sku": "t"}).to_string(),
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        request
    };
    let mut client = f.api.client.clone();
    assert_status(
        client.put(put(None)).await,
        Code::Unauthenticated,
        "missing bearer token",
    );
    assert_status(
        client.put(put(Some("Bearer wrong"))).await,
        Code::Unauthenticated,
        "invalid bearer token",
    );
    assert_eq!(f.row_count().await, 0);
    client.put(put(Some("Bearer s3cret"))).await.unwrap();
    assert_eq!(f.row_count().await, 1);

    assert_serving(&f.api.channel, "cachesync.v1.CacheSync").await;
    f.finish().await;
}

#[tokio::test]
async fn health_is_serving_and_reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let f = fixture(Setup::default()).await;
    for service in ["", "cachesync.v1.CacheSync"] {
        assert_serving(&f.api.channel, service).await;
    }

    let mut reflection = ServerReflectionClient::new(f.api.channel.clone());
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let answers: Vec<ServerReflectionResponse> = {
        let requests = stream_of([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "cachesync.v1.CacheSync".to_owned(),
            )),
        ]);
        let answers = reflection
            .server_reflection_info(requests)
            .await
            .unwrap()
            .into_inner();
        all_of(answers).await
    };
    let Some(MessageResponse::ListServicesResponse(list)) = &answers[0].message_response else {
        panic!("a list of services: {answers:?}");
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert!(names.contains(&"cachesync.v1.CacheSync"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let Some(MessageResponse::FileDescriptorResponse(files)) = &answers[1].message_response else {
        panic!("the file of CacheSync: {answers:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    f.finish().await;
}

/// A client stream of `items` that ends after them.
fn stream_of<T: Send + 'static>(
    items: impl IntoIterator<Item = T, IntoIter: Send + 'static>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter(items)
}

/// Every message of a server stream, which must end without an error.
async fn all_of<T>(mut stream: tonic::Streaming<T>) -> Vec<T> {
    let mut all = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        all.push(message);
    }
    all
}

fn write_request(id: u64, table: &str, op: pb::Op, row: Json) -> pb::WriteRequest {
    pb::WriteRequest {
        id,
        table: table.to_owned(),
        op: op as i32,
        row_json: row.to_string(),
    }
}

#[tokio::test]
async fn the_write_stream_answers_in_order_with_each_id() {
    let mut f = fixture(Setup::default()).await;
    let table = f.table_name();
    let mut requests: Vec<pb::WriteRequest> = (0..200)
        .map(|i| {
            write_request(
                1000 + i,
                &table,
                pb::Op::Upsert,
                json!({"id": i, "sku": format!("w-{i}")}),
            )
        })
        .collect();
    requests[5] = write_request(1005, &table, pb::Op::Upsert, json!({"id": 5, "colour": 1}));
    requests[6] = write_request(1006, &table, pb::Op::Unspecified, json!({"id": 6}));
    requests[7] = write_request(1007, "nope.items", pb::Op::Upsert, json!({"id": 7}));
    requests.push(write_request(
        9999,
        &table,
        pb::Op::Delete,
        json!({"id": 0}),
    ));
    let seen = all_of(f.write(requests).await).await;
    let ids: Vec<u64> = seen.iter().map(|r| r.id).collect();
    let expected: Vec<u64> = (1000..1200).chain([9999]).collect();
    assert_eq!(ids, expected, "one result per request, in request order");
    let error = |i: usize| match &seen[i].outcome {
        Some(pb::write_result::Outcome::Error(e)) => (Code::from_i32(e.code), e.message.clone()),
        other => panic!("result {i} is an error: {other:?}"),
    };
    let (code, message) = error(5);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("colour"), "{message}");
    let (code, message) = error(6);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("op: "), "{message}");
    let (code, message) = error(7);
    assert_eq!(code, Code::NotFound);
    assert!(message.contains("nope.items"), "{message}");
    for (i, result) in seen.iter().enumerate() {
        if ![5, 6, 7].contains(&i) {
            assert!(
                matches!(result.outcome, Some(pb::write_result::Outcome::Receipt(_))),
                "{i}: {result:?}"
            );
        }
    }
    // 200 upserts, 3 refused, then row 0 deleted.
    assert_eq!(f.row_count().await, 196);
    assert_eq!(f.cached(0).await, None);
    assert!(f.cached(199).await.is_some());
    f.finish().await;
}

#[tokio::test]
async fn the_write_stream_runs_at_most_max_in_flight_writes() {
    let max_in_flight = 3;
    let mut f = fixture_with(
        Setup::default(),
        GrpcConfig {
            max_in_flight,
            ..GrpcConfig::default()
        },
    )
    .await;
    let table = f.table_name();
    f.put(json!({"id": 1, "sku": "locked"})).await.unwrap();
    // Hold row 1's lock so every write of it waits inside MySQL, where it can be counted.
    let mut holder = common::mysql_conn().await;
    holder
        .query_drop(format!("USE {}", f.db.name))
        .await
        .unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM items WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();

    let requests: Vec<pb::WriteRequest> = (0..20)
        .map(|i| {
            write_request(
                i,
                &table,
                pb::Op::Upsert,
                json!({"id": 1, "sku": "locked", "note": format!("write {i}")}),
            )
        })
        .collect();
    let mut client = f.api.client.clone();
    let writing = tokio::spawn(async move { client.write(stream_of(requests)).await.unwrap() });

    let waiting = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE ID <> CONNECTION_ID() AND COMMAND IN ('Query', 'Execute') AND INFO LIKE '%{}%items%'",
        f.db.name
    );
    let mut counter = common::mysql_conn().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: u64 = counter.query_first(&waiting).await.unwrap().unwrap();
        if n >= max_in_flight as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} writes reached MySQL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for more to start, were the bound not kept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n: u64 = counter.query_first(&waiting).await.unwrap().unwrap();
    assert_eq!(n, max_in_flight as u64, "writes running at once");

    holder.query_drop("COMMIT").await.unwrap();
    let mut results = writing.await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(result) = tokio::time::timeout(Duration::from_secs(30), results.message())
        .await
        .expect("results come once the lock is released")
        .unwrap()
    {
        assert!(
            matches!(result.outcome, Some(pb::write_result::Outcome::Receipt(_))),
            "{result:?}"
        );
        ids.push(result.id);
    }
    assert_eq!(ids, (0..20).collect::<Vec<u64>>());
    let note: String =
        f.db.conn
            .query_first("SELECT note FROM items WHERE id = 1")
            .await
            .unwrap()
            .unwrap();
    // Up to max_in_flight writes of one stream run at once, so the last writes of the same
    // row may commit in either order (docs/api.md): the row holds one of them.
    let last_window: Vec<String> = (20 - max_in_flight..20)
        .map(|i| format!("write {i}"))
        .collect();
    assert!(
        last_window.contains(&note),
        "the row holds one of the last {max_in_flight} writes, not {note}"
    );
    drop(holder);
    drop(counter);
    f.finish().await;
}

#[tokio::test]
async fn on_shutdown_a_write_stream_answers_what_it_read_then_ends_unavailable() {
    let mut f = fixture(Setup::default()).await;
    let table = f.table_name();
    let (requests, inbound) = tokio::sync::mpsc::channel::<pb::WriteRequest>(4);
    let inbound = futures_util::stream::unfold(inbound, |mut inbound| async move {
        inbound.recv().await.map(|request| (request, inbound))
    });
    let mut results = f.api.client.write(inbound).await.unwrap().into_inner();
    let row = |id: u64| {
        write_request(
            id,
            &table,
            pb::Op::Upsert,
            json!({"id": id, "sku": format!("s{id}")}),
        )
    };
    requests.send(row(1)).await.unwrap();
    let first = results.message().await.unwrap().expect("the first result");
    assert_eq!(first.id, 1);

    // The client keeps its stream open; the server's shutdown ends it.
    let stopping = Instant::now();
    f.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), results.message())
        .await
        .expect("the stream ends at the shutdown")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("shutting down"), "{ended:?}");
    assert_eq!(f.row_count().await, 1);
    f.finish().await;
    assert!(
        stopping.elapsed() < grpc::SHUTDOWN_GRACE,
        "the stream did not hold the shutdown: {:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn mysql_or_redis_down_is_unavailable() {
    let port = common::free_port();
    let mut f = fixture(Setup {
        mysql_url: Some(format!("mysql://root:hunter2@127.0.0.1:{port}")),
        readiness_redis_url: Some(format!("redis://127.0.0.1:{}", common::free_port())),
        ..Setup::default()
    })
    .await;
    let status = f.put(json!({"id": 1, "sku": "x"})).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("hunter2"), "{status:?}");
    assert_status(f.get("1").await, Code::Unavailable, "Redis");
    f.finish().await;
}

/// A codec that sends and receives raw bytes: a client that speaks gRPC's framing but
/// not protobuf.
#[derive(Default, Clone, Copy)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn malformed_and_oversize_messages_are_refused_and_the_server_goes_on() {
    let mut f = fixture_with(
        Setup::default(),
        GrpcConfig {
            max_message_bytes: 1024,
            ..GrpcConfig::default()
        },
    )
    .await;
    let mut raw = tonic::client::Grpc::new(f.api.channel.clone());
    let put = tonic::codegen::http::uri::PathAndQuery::from_static("/cachesync.v1.CacheSync/Put");
    // Field 1 (table), length-delimited, claims 127 bytes and ends after 2; then a field
    // with the reserved wire type 7.
    for bytes in [vec![0x0a, 0x7f, b'x', b'y'], vec![0x0f, 0x01]] {
        raw.ready().await.unwrap();
        let refused = raw
            .unary(Request::new(bytes.clone()), put.clone(), RawBytes)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Internal, "{bytes:?}: {refused:?}");
        assert!(
            refused.message().contains("decode"),
            "{bytes:?}: {refused:?}"
        );
    }

    let note = "n".repeat(2000);
    assert_status(
        f.put(json!({"id": 1, "sku": "big", "note": note})).await,
        Code::OutOfRange,
        "the limit is: 1024 bytes",
    );
    // A Write stream with an oversize message ends with that status.
    let table = f.table_name();
    let requests = vec![
        write_request(1, &table, pb::Op::Upsert, json!({"id": 1, "sku": "ok"})),
        write_request(2, &table, pb::Op::Upsert, json!({"id": 2, "note": note})),
    ];
    let mut results = f.write(requests).await;
    let first = results.message().await.unwrap().expect("the first result");
    assert_eq!(first.id, 1);
    let ended = results.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::OutOfRange, "{ended:?}");

    assert_eq!(f.row_count().await, 1);
    f.put(json!({"id": 3, "sku": "after"})).await.unwrap();
    assert_eq!(f.row_count().await, 2);
    f.finish().await;
}

fn grpc_config(db: &str, prefix: &str, api_port: u16, grpc_port: u16) -> String {
    common::config_toml(
        "dual-write",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{api_port}\"\ntoken = \"daemon-token\"\n\
             [grpc]\nlisten = \"127.0.0.1:{grpc_port}\"\n\
             [[tables]]\nname = \"{db}.items\"\nkey = \"{prefix}:item:{{id}}\"\n"
        ),
    )
}

#[tokio::test]
async fn the_daemon_serves_grpc_next_to_http_and_stops_on_sigterm() {
    let mut db = common::TestDb::create("grpcd").await;
    db.exec(TABLE_SQL).await;
    let prefix = common::unique("grpcd");
    let dir = tempfile::tempdir().unwrap();
    let grpc_port = common::free_port();
    let config = common::write_config(
        dir.path(),
        &grpc_config(&db.name, &prefix, common::free_port(), grpc_port),
    );
    let mut daemon =
        common::daemon::RunningDaemon::start(dir.path(), &config, 0, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        daemon.assert_alive();
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .unwrap()
            .connect()
            .await
        {
            break channel;
        }
        assert!(
            Instant::now() < deadline,
            "no gRPC listener within 30 s\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_serving(&channel, "").await;
    let mut request = Request::new(pb::PutRequest {
        table: format!("{}.items", db.name),
        row_json: json!({"id": 7, "sku": "d-7", "note": "through the daemon"}).to_string(),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer daemon-token".parse().unwrap());
    CacheSyncClient::new(channel)
        .put(request)
        .await
        .expect("a write with the api.token");
    let mut redis = common::redis_conn().await;
    let cached: Option<String> = redis.get(format!("{prefix}:item:7")).await.unwrap();
    let cached: Json = serde_json::from_str(&cached.expect("the row is in Redis")).unwrap();
    assert_eq!(cached["note"], "through the daemon");

    // A second daemon whose grpc.listen the first one holds does not start.
    let second = tempfile::tempdir().unwrap();
    let taken = common::write_config(
        second.path(),
        &grpc_config(&db.name, &prefix, common::free_port(), grpc_port),
    );
    let mut refused =
        common::daemon::RunningDaemon::start(second.path(), &taken, 0, Duration::from_secs(60));
    let code = refused.wait_exit(Duration::from_secs(30));
    let refusal = refused.stderr();
    assert_eq!(code, Some(1), "{refusal}");
    assert!(
        refusal.lines().any(|l| l.starts_with(&format!(
            "error: grpc.listen: cannot listen on 127.0.0.1:{grpc_port}: "
        ))),
        "{refusal}"
    );

    daemon.stop();
    assert_eq!(
        daemon.wait_exit(Duration::ZERO),
        Some(0),
        "exit 0 after SIGTERM"
    );
    let stderr = daemon.stderr();
    assert!(stderr.contains("gRPC API listening"), "{stderr}");
    assert!(stderr.contains("write API listening"), "{stderr}");
    assert!(
        !stderr.contains("daemon-token"),
        "the token is never logged"
    );
    common::clear_redis_prefix(&prefix).await;
    db.drop_db().await;
}
