//! `PUT` and `DELETE /v1/tables/{database.table}/rows`: a row write through the
//! configured strategy's write path ([`SyncStrategy::write`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::ApiState;
use super::error::ApiError;
use crate::model::change::{Op, RowWrite};
use crate::model::json::RawObject;
use crate::model::params::row_values;
use crate::strategy::{RedisOutcome, SyncStrategy, WriteReceipt};

pub(super) async fn upsert(
    state: State<Arc<ApiState>>,
    table: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    write(state, table, body, Op::Upsert).await
}

pub(super) async fn delete(
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
    let body = body.map_err(|e| {
        if super::deadline::is_expired(&e) {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, e.body_text())
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    // Raw values: numbers go to MySQL as the client wrote them (model::json).
    let object = RawObject::parse(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a JSON object of column name → value: {e}"
        ))
    })?;
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
