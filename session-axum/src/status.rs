//! The one table from a session error to an HTTP status, used by [`SessionError`] (errors a
//! handler returns) and by the layer (errors while finishing the request).
//!
//! | error | status | why |
//! |---|---|---|
//! | `Unavailable`, `Timeout` (retryable) | [`LayerConfig::error_status`], 503 by default, with `Retry-After: 1` | the store is down or slow; the same request may work in a moment |
//! | `TooLarge` | 413 Payload Too Large | the session would exceed its limits; nothing was written |
//! | `InvalidInput` | 400 Bad Request | a name or value the contract refuses |
//! | `Conflict` | 409 Conflict | optimistic mode: another request changed the session first |
//! | `NotFound` | 410 Gone, where a handler returns it | the session ended meanwhile (logged out elsewhere, expired); at the end of a request this is no error at all: the response stands and the client is told to drop its id |
//! | `Unsupported` | 501 Not Implemented | the store has no such feature (a principal listing on memcached) |
//! | anything else (`Backend`, `Encode`, `Decode`, `Config`) | 500 Internal Server Error | a fault of the service or its store, not of the user's data |
//!
//! [`SessionError`]: crate::SessionError
//! [`LayerConfig::error_status`]: crate::LayerConfig::error_status

use axum::response::{IntoResponse, Response};
use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use session_core::Error;

/// The status of `error` by the table above; `unavailable` is the status for retryable errors.
pub fn status_for(error: &Error, unavailable: StatusCode) -> StatusCode {
    match error {
        error if error.is_retryable() => unavailable,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::NotFound => StatusCode::GONE,
        Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The response for `error`: its status, and `Retry-After` when it is retryable. Logged at
/// `warn` with the whole cause chain (the store and the operation included), except for the
/// user's own mistakes (4xx), logged at `debug`; counted in `session_layer_error_responses_total`
/// by `status` (through the `metrics` facade: a no-op until the application installs a
/// recorder).
pub(crate) fn error_response(error: &Error, unavailable: StatusCode, during: &str) -> Response {
    let status = status_for(error, unavailable);
    metrics::counter!("session_layer_error_responses_total", "status" => status.as_u16().to_string())
        .increment(1);
    if status.is_server_error() {
        tracing::warn!(error = %error.report(), %status, "session error {during}");
    } else {
        tracing::debug!(error = %error.report(), %status, "session error {during}");
    }
    let mut response = status.into_response();
    if error.is_retryable() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_error_gets_the_status_of_the_table() {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let cases = [
            (Error::unavailable("down"), unavailable),
            (Error::timeout(Duration::from_secs(1)), unavailable),
            (
                Error::TooLarge {
                    what: "size",
                    actual: 2,
                    limit: 1,
                },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (Error::InvalidInput("x".into()), StatusCode::BAD_REQUEST),
            (
                Error::Conflict {
                    expected: 1,
                    actual: 2,
                },
                StatusCode::CONFLICT,
            ),
            (Error::NotFound, StatusCode::GONE),
            (Error::backend("bug"), StatusCode::INTERNAL_SERVER_ERROR),
            (
                Error::Config("bad".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (Error::Unsupported("x"), StatusCode::NOT_IMPLEMENTED),
        ];
        for (error, status) in cases {
            assert_eq!(status_for(&error, unavailable), status, "{error}");
            let response = error_response(&error, unavailable, "in a test");
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers().get(RETRY_AFTER).is_some(),
                error.is_retryable(),
                "{error}"
            );
        }
        assert_eq!(
            status_for(&Error::unavailable("down"), StatusCode::BAD_GATEWAY),
            StatusCode::BAD_GATEWAY,
            "the configured status for retryable errors"
        );
    }

    #[test]
    fn error_responses_are_counted_by_status() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        metrics::with_local_recorder(&recorder, || {
            error_response(&Error::unavailable("down"), unavailable, "in a test");
            error_response(
                &Error::timeout(Duration::from_secs(1)),
                unavailable,
                "in a test",
            );
            error_response(&Error::InvalidInput("x".into()), unavailable, "in a test");
        });
        let mut counts = std::collections::HashMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let status = key.key().labels().next().map(|l| l.value().to_owned());
            if let (Some(status), DebugValue::Counter(count)) = (status, value) {
                counts.insert(status, count);
            }
        }
        assert_eq!(counts.get("503"), Some(&2), "{counts:?}");
        assert_eq!(counts.get("400"), Some(&1), "{counts:?}");
    }
}
