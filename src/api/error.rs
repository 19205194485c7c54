//! The API's errors: the one decision of which HTTP status an [`Error`] answers with
//! ([`status_of`]), and the `{"error": "<message>"}` body every refusal carries.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{debug, warn};

use crate::error::Error;

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
    (1142, StatusCode::SERVICE_UNAVAILABLE), // command denied: a grant revoked since start
    (1143, StatusCode::SERVICE_UNAVAILABLE), // column command denied
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

/// The body of every refusal.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "unknown table shop.nothing; configured tables: shop.users"}))]
pub struct ErrorBody {
    /// What went wrong, naming the column or table at fault; one line.
    pub error: String,
}

/// An error answer: `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
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

impl ApiError {
    /// Logs the refusal: a server error (ours or a dependency's) as a warning, the
    /// client's own mistakes at debug.
    pub(super) fn log(&self) {
        if self.status.is_server_error() {
            warn!(status = self.status.as_u16(), error = %self.message, "api request failed");
        } else {
            debug!(status = self.status.as_u16(), error = %self.message, "api request refused");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
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
            (mysql_error(1142), 503),
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
}
