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
use crate::error::Error;
use crate::model::change::{Op, RowWrite};
use crate::model::json::RawObject;
use crate::model::params::row_values;
use crate::model::table::SyncedTable;
use crate::strategy::{RedisOutcome, SyncStrategy, WriteReceipt};

/// Upsert a row through the configured strategy's write path.
///
/// `PUT`: insert the row, or update it when its primary key exists.
#[utoipa::path(
    put,
    path = "/v1/tables/{table}/rows",
    tag = "rows",
    params(super::schema::TablePath),
    request_body(content = super::schema::Row, description = "Column → value, every \
        primary-key column included; columns left out keep their value (or default)"),
    responses(super::schema::WriteAnswers),
)]
pub(super) async fn upsert(
    state: State<Arc<ApiState>>,
    table: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    write(state, table, body, Op::Upsert).await
}

/// Delete a row through the configured strategy's write path.
///
/// `DELETE`: delete the row (deleting an absent row succeeds).
#[utoipa::path(
    delete,
    path = "/v1/tables/{table}/rows",
    tag = "rows",
    params(super::schema::TablePath),
    request_body(content = super::schema::Row, description = "Exactly the primary-key \
        columns"),
    responses(super::schema::WriteAnswers),
)]
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
    let table = state.table_named(&name)?;
    let body = body.map_err(|e| {
        if super::deadline::is_expired(&e) {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, e.body_text())
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    let receipt = write_row(&state, table, op, &body).await?;
    Ok(axum::Json(receipt_json(&name, op, &receipt)).into_response())
}

impl ApiState {
    /// The plan of the configured table `name`, or a 404 that lists the configured ones.
    pub(super) fn table_named(
        &self,
        name: &str,
    ) -> std::result::Result<Arc<SyncedTable>, ApiError> {
        self.table(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown table {name}; configured tables: {}",
                    self.table_names().join(", ")
                ),
            )
        })
    }
}

/// The one row write behind every API (HTTP `PUT`/`DELETE`, gRPC `Put`, `Delete`,
/// `Write`): `body`, a JSON object column → value, checked against `table` and written
/// through the strategy; a write that met a DDL since the plan is re-planned and tried
/// again once.
pub(super) async fn write_row(
    state: &ApiState,
    mut table: Arc<SyncedTable>,
    op: Op,
    body: &[u8],
) -> std::result::Result<WriteReceipt, ApiError> {
    // Raw values: numbers go to MySQL as the client wrote them (model::json).
    let object = RawObject::parse(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a JSON object of column name → value: {e}"
        ))
    })?;
    // A column the plan does not know may be one a DDL added since it was made.
    if object
        .0
        .iter()
        .any(|(column, _)| table.schema.position(column).is_none())
    {
        table = state.refresh(&table).await;
    }
    let mut outcome = write_once(state, &table, op, &object).await;
    // MySQL no longer knows a planned column, or a value no longer decodes as planned: a
    // DDL since the plan. Such a failure rolled the write back, so once re-planned it is
    // tried again (a direct-mode mq write that failed after its commit repeats the same
    // upsert or delete: the same effect).
    if let Err(Failed::Write(e)) = &outcome
        && e.suggests_schema_change()
    {
        let fresh = state.refresh(&table).await;
        if !Arc::ptr_eq(&fresh, &table) {
            outcome = write_once(state, &fresh, op, &object).await;
        }
    }
    match outcome {
        Ok(receipt) => Ok(receipt),
        Err(Failed::Refused(e)) => Err(e),
        Err(Failed::Write(e)) => Err(e.into()),
    }
}

/// Why [`write_once`] did not write.
enum Failed {
    /// The request does not fit the table (or the write task died): the answer as is.
    Refused(ApiError),
    /// The strategy's write path failed.
    Write(Error),
}

/// Checks `object` against `table` and writes it through the strategy.
async fn write_once(
    state: &ApiState,
    table: &Arc<SyncedTable>,
    op: Op,
    object: &RawObject,
) -> std::result::Result<WriteReceipt, Failed> {
    let values =
        row_values(table, op, object).map_err(|e| Failed::Refused(ApiError::bad_request(e)))?;
    let write = RowWrite {
        table: table.clone(),
        op,
        values,
    };
    // Its own task: a client that hangs up must not cut the write path in two.
    let strategy = state.strategy.clone();
    state
        .writes
        .spawn(async move { strategy.write(write).await })
        .await
        .map_err(|e| {
            Failed::Refused(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the write of a row of {} failed: {e}", table.name()),
            ))
        })?
        .map_err(Failed::Write)
}

/// The 200 answer of a write.
pub(super) fn receipt_json(table: &str, op: Op, receipt: &WriteReceipt) -> Json {
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
