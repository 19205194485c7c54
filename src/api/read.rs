//! `GET /v1/tables/{database.table}/rows?<pk>=<value>&…`: a row through the cache-aside
//! read path ([`crate::read`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::{ApiError, ErrorBody, status_of};
use crate::read::{Answer, ReadError};

/// Read a row through the cache (L1, Redis, then MySQL).
///
/// `GET /v1/tables/{table}/rows?<pk>=<value>&…`: the row through the read path.
#[utoipa::path(
    get,
    path = "/v1/tables/{table}/rows",
    tag = "rows",
    params(
        super::schema::TablePath,
        ("key" = Object, Query, style = Form, explode,
            description = "The primary key: one `<column>=<value>` per primary-key \
                           column, e.g. `?id=7`"),
    ),
    responses(
        (status = 200, description = "The row (the `json` encoding without `_cachesync_v`)",
            body = super::schema::Row),
        (status = 400, description = "A primary-key column missing, unknown or of the wrong \
            type", body = ErrorBody),
        (status = 404, description = "No such row, or not a configured table (or reads \
            are off for it)", body = ErrorBody),
        (status = 500, description = "An error that retrying will not fix", body = ErrorBody),
        (status = 503, description = "MySQL or Redis cannot be reached; `Retry-After: 1`",
            body = ErrorBody),
    ),
)]
pub(super) async fn read(
    State(state): State<Arc<ApiState>>,
    table: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let Path(name) = table.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match read_row(&state, &name, &pairs).await? {
        Some(doc) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Bytes::copy_from_slice(&doc),
        )
            .into_response()),
        None => Err(absent(&name, &pairs)),
    }
}

/// The one row read behind every API (HTTP `GET`, gRPC `Get` and `BatchGet`): the row of
/// `name` whose primary key is `pairs` (column, value as text), as a JSON object; `None`
/// when there is no such row.
pub(super) async fn read_row(
    state: &ApiState,
    name: &str,
    pairs: &[(String, String)],
) -> std::result::Result<Option<Arc<[u8]>>, ApiError> {
    let reads = state.reads().await?;
    match reads.get(name, pairs).await {
        Ok(Answer::Found(doc)) => Ok(Some(doc)),
        Ok(Answer::Absent) => Ok(None),
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

/// The 404 of a read that found no row.
pub(super) fn absent(name: &str, pairs: &[(String, String)]) -> ApiError {
    let key: Vec<String> = pairs.iter().map(|(c, v)| format!("{c}={v}")).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no row of {name} with {}", key.join(", ")),
    )
}
