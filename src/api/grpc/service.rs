//! The `cachesync.v1.CacheSync` service: each call goes through the same row write
//! ([`write_row`]) and row read ([`read_row`]) as the HTTP API, so validation, the
//! re-plan after a DDL, the write running as its own task and every error message are
//! the HTTP API's; only the envelope differs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::pb;
use super::status::{code_of, status};
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::read::{absent, read_row};
use crate::api::write::write_row;
use crate::model::change::Op;
use crate::strategy::{RedisOutcome, WriteReceipt};

/// Most keys of one `BatchGet`: a bound on what one call makes the server hold and do.
pub const MAX_BATCH_KEYS: usize = 1000;

/// Reads of one `BatchGet` running at once: enough to overlap round trips to Redis
/// and MySQL without one call taking every pooled connection.
const BATCH_READS_AT_ONCE: usize = 16;

pub(super) struct CacheSync {
    pub(super) state: Arc<ApiState>,
    /// Writes of one `Write` stream running at once (`grpc.max_in_flight`).
    pub(super) max_in_flight: usize,
    /// The server's shutdown: `Write` streams stop reading then, so a graceful shutdown
    /// does not wait on a client that keeps its stream open.
    pub(super) shutdown: CancellationToken,
}

/// How a `Write` stream ends on shutdown, after the results of the writes it had read.
const SHUTTING_DOWN: &str = "the server is shutting down: requests without a result were not read and \
                             not written; send them again to another instance or after the restart";

/// The results of a `Write` stream.
type WriteResults = Pin<Box<dyn Stream<Item = Result<pb::WriteResult, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cache_sync_server::CacheSync for CacheSync {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::WriteReceipt>, Status> {
        let pb::PutRequest { table, row_json } = request.into_inner();
        write(&self.state, &table, Op::Upsert, &row_json)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteReceipt>, Status> {
        let pb::DeleteRequest { table, key_json } = request.into_inner();
        write(&self.state, &table, Op::Delete, &key_json)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let pb::GetRequest { table, key } = request.into_inner();
        let pairs = pairs(key);
        match read_row(&self.state, &table, &pairs).await {
            Ok(Some(doc)) => Ok(Response::new(pb::GetResponse {
                row_json: row_text(&doc),
            })),
            Ok(None) => Err(status(absent(&table, &pairs))),
            Err(e) => Err(status(e)),
        }
    }

    async fn batch_get(
        &self,
        request: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        let pb::BatchGetRequest { table, keys } = request.into_inner();
        if keys.len() > MAX_BATCH_KEYS {
            return Err(Status::invalid_argument(format!(
                "keys: {} keys in one BatchGet, at most {MAX_BATCH_KEYS}; split the batch",
                keys.len()
            )));
        }
        let state = &self.state;
        let table = &table;
        let rows: Vec<pb::BatchGetRow> = futures_util::stream::iter(keys.into_iter().enumerate())
            .map(|(index, key)| async move {
                let found = read_row(state, table, &pairs(key.columns)).await;
                // Which key was at fault, for a batch of many.
                found.map_err(|e| ApiError {
                    message: format!("keys[{index}]: {}", e.message),
                    ..e
                })
            })
            .buffered(BATCH_READS_AT_ONCE)
            .map_ok(|found| match found {
                Some(doc) => pb::BatchGetRow {
                    found: true,
                    row_json: row_text(&doc),
                },
                None => pb::BatchGetRow {
                    found: false,
                    row_json: String::new(),
                },
            })
            .try_collect()
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BatchGetResponse { rows }))
    }

    type WriteStream = WriteResults;

    /// At most `max_in_flight` writes run at once: `buffered` pulls the next request off
    /// the stream only when fewer are running, and yields results in request order. A
    /// client that stops reading the results stops the pulling too (the response is
    /// polled only as HTTP/2 flow control lets it send), so neither side buffers without
    /// bound. A write that fails is a result with its error; a broken stream (a message
    /// that does not decode, or is over the size limit) ends the call with that status,
    /// and so does the server's shutdown (UNAVAILABLE, after the writes already read).
    async fn write(
        &self,
        request: Request<Streaming<pb::WriteRequest>>,
    ) -> Result<Response<WriteResults>, Status> {
        let state = self.state.clone();
        let inbound = futures_util::stream::unfold(
            Some((request.into_inner(), self.shutdown.clone())),
            |reading| async move {
                let (mut inbound, shutdown) = reading?;
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        Some((Err(Status::unavailable(SHUTTING_DOWN)), None))
                    }
                    next = inbound.next() => next.map(|item| (item, Some((inbound, shutdown)))),
                }
            },
        );
        let results = inbound
            .map(move |request| {
                let state = state.clone();
                async move {
                    let request = request?;
                    let outcome = match op_of(request.op) {
                        Ok(op) => write(&state, &request.table, op, &request.row_json).await,
                        Err(refused) => Err(refused),
                    };
                    Ok(pb::WriteResult {
                        id: request.id,
                        outcome: Some(match outcome {
                            Ok(receipt) => pb::write_result::Outcome::Receipt(receipt),
                            Err(e) => {
                                e.log();
                                pb::write_result::Outcome::Error(pb::WriteError {
                                    code: code_of(e.status) as i32,
                                    message: e.message,
                                })
                            }
                        }),
                    })
                }
            })
            .buffered(self.max_in_flight);
        Ok(Response::new(Box::pin(results)))
    }
}

/// A write of `body` to the configured table `table`, answered as the gRPC receipt.
async fn write(
    state: &ApiState,
    table: &str,
    op: Op,
    body: &str,
) -> Result<pb::WriteReceipt, ApiError> {
    let plan = state.table_named(table)?;
    let receipt = write_row(state, plan, op, body.as_bytes()).await?;
    Ok(receipt_pb(table, op, &receipt))
}

/// The operation a `WriteRequest` asks for.
fn op_of(op: i32) -> Result<Op, ApiError> {
    match pb::Op::try_from(op) {
        Ok(pb::Op::Upsert) => Ok(Op::Upsert),
        Ok(pb::Op::Delete) => Ok(Op::Delete),
        _ => Err(ApiError::bad_request(format!(
            "op: must be OP_UPSERT or OP_DELETE, got {op}"
        ))),
    }
}

/// The receipt of a write (the HTTP API's 200 body, as a message).
fn receipt_pb(table: &str, op: Op, receipt: &WriteReceipt) -> pb::WriteReceipt {
    let (redis, applied) = match receipt.redis {
        RedisOutcome::Applied(a) => (
            pb::RedisState::Applied,
            Some(pb::Applied {
                written: a.written as u64,
                replayed: a.replayed as u64,
                stale: a.stale as u64,
            }),
        ),
        RedisOutcome::Pending => (pb::RedisState::Pending, None),
        RedisOutcome::Background => (pb::RedisState::Background, None),
    };
    pb::WriteReceipt {
        table: table.to_owned(),
        op: match op {
            Op::Upsert => pb::Op::Upsert,
            Op::Delete => pb::Op::Delete,
        } as i32,
        committed_at_us: receipt.committed_at_us,
        version: receipt.version,
        redis: redis as i32,
        applied,
    }
}

/// A key's columns as the read path takes them (the HTTP API's query pairs), sorted so
/// messages name them in a stable order.
fn pairs(key: HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = key.into_iter().collect();
    pairs.sort_unstable();
    pairs
}

/// A row document as the text of `row_json`. It is JSON, so UTF-8 (binary columns are
/// base64 in the `json` encoding).
fn row_text(doc: &[u8]) -> String {
    String::from_utf8_lossy(doc).into_owned()
}
