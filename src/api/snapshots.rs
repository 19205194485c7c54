//! `POST /v1/snapshots` (start online snapshots of tables on the running daemon) and
//! `GET /v1/snapshots` (the ones not finished, with their progress); see
//! [`crate::snapshot`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::ApiState;
use super::error::{ApiError, ErrorBody, status_of};
use crate::snapshot::Snapshots;

fn snapshots(state: &ApiState) -> Result<&Snapshots, ApiError> {
    state.strategy.snapshots().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process runs no online snapshots",
        )
    })
}

/// Start online snapshots of tables on the running daemon.
///
/// `POST /v1/snapshots` with `{"tables": ["db.t", …]}` (every table when the list is
/// empty or left out, or the body is empty): 202 with what each table's request did.
#[utoipa::path(
    post,
    path = "/v1/snapshots",
    tag = "snapshots",
    request_body(content = Option<super::schema::SnapshotRequest>,
        description = "Which tables; an empty body means every table"),
    responses(
        (status = 202, description = "Started, or already running (it carries on)",
            body = super::schema::SnapshotsRequested),
        (status = 400, description = "The body is not JSON or `tables` not a list of names",
            body = ErrorBody),
        (status = 404, description = "A name is not a configured table", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 500, description = "An error that retrying will not fix", body = ErrorBody),
        (status = 503, description = "This process runs no online snapshots, or Redis \
            cannot be reached", body = ErrorBody),
    ),
)]
pub(super) async fn start(
    State(state): State<Arc<ApiState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    let snapshots = snapshots(&state)?;
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let tables: Vec<String> = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        let doc: Json = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
        match doc.get("tables") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(names)) => names
                .iter()
                .map(|n| {
                    n.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::bad_request(format!("tables: expected names, got {n}"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "tables: expected a list of \"database.table\" names, got {other}"
                )));
            }
        }
    };
    snapshots
        .check(&tables)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    let requested = snapshots
        .request(&tables, "requested")
        .await
        .map_err(|e| ApiError::new(status_of(&e), e.to_string().replace('\n', "; ")))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "snapshots": requested })),
    )
        .into_response())
}

/// The online snapshots not finished, with their progress.
///
/// `GET /v1/snapshots`: the snapshots not finished (an empty list when none runs).
#[utoipa::path(
    get,
    path = "/v1/snapshots",
    tag = "snapshots",
    responses(
        (status = 200, description = "An empty list when none runs",
            body = super::schema::SnapshotsRunning),
        (status = 500, description = "An error that retrying will not fix", body = ErrorBody),
        (status = 503, description = "This process runs no online snapshots, or Redis \
            cannot be reached", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
) -> std::result::Result<Response, ApiError> {
    let snapshots = snapshots(&state)?;
    let status = snapshots
        .status()
        .await
        .map_err(|e| ApiError::new(status_of(&e), e.to_string().replace('\n', "; ")))?;
    Ok(axum::Json(json!({ "snapshots": status })).into_response())
}
