//! The gRPC code of a refusal. Which HTTP status an error answers with is decided once,
//! in [`crate::api::status_of`]; the gRPC API translates that status instead of deciding
//! again, so both APIs always agree on what an error is (a 409 is FAILED_PRECONDITION,
//! a 503 UNAVAILABLE, ...).

use axum::http::StatusCode;
use tonic::{Code, Status};

use crate::api::ApiError;

/// The gRPC code that says what the HTTP `status` says.
pub(super) fn code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        // A UNIQUE key or a foreign key: the row conflicts with what the table holds, and
        // retrying the same write cannot succeed until that changes.
        StatusCode::CONFLICT => Code::FailedPrecondition,
        StatusCode::PAYLOAD_TOO_LARGE => Code::OutOfRange,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// `error` as a gRPC status with the same message, logged the way the HTTP API logs it.
pub(super) fn status(error: ApiError) -> Status {
    error.log();
    Status::new(code_of(error.status), error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_the_api_contract_names() {
        for (status, code) in [
            (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            (StatusCode::NOT_FOUND, Code::NotFound),
            (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
            (StatusCode::CONFLICT, Code::FailedPrecondition),
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        ] {
            assert_eq!(code_of(status), code, "{status}");
        }
    }
}
