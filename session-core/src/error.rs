//! The one error type every store returns.

use std::time::Duration;

/// A boxed error from a driver or codec, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a session operation.
///
/// Variants are semantic, so callers can decide without knowing the store: [`Error::is_retryable`]
/// separates transient trouble (server down, timeout) from permanent failures, and the HTTP layer
/// maps `Unavailable`/`Timeout` to 503. Driver errors are kept as `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session does not exist (never created, deleted, rotated away or expired).
    #[error("session not found")]
    NotFound,
    /// Optimistic save: the stored version is not the one the session was loaded with.
    /// Nothing was written.
    #[error(
        "session was changed concurrently (loaded version {expected}, stored version {actual})"
    )]
    Conflict {
        /// Version the caller's session was loaded with.
        expected: u64,
        /// Version found in the store.
        actual: u64,
    },
    /// A size or count limit would be exceeded. Nothing was written.
    #[error("{what} is {actual}, over the limit of {limit}")]
    TooLarge {
        /// What was measured ("encoded session size", "attribute count", ...).
        what: &'static str,
        /// The measured value.
        actual: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The caller passed something the contract does not accept.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The store has no such feature (see [`crate::Capabilities`]).
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
    /// A value could not be encoded by the codec.
    #[error("cannot encode attribute `{name}`")]
    Encode {
        /// Attribute name.
        name: String,
        /// Codec error.
        #[source]
        source: BoxError,
    },
    /// A stored attribute could not be decoded into the requested type.
    #[error("cannot decode attribute `{name}`")]
    Decode {
        /// Attribute name.
        name: String,
        /// Codec error.
        #[source]
        source: BoxError,
    },
    /// The store could not be reached or refused service for now. Retryable.
    #[error("session store unavailable")]
    Unavailable {
        /// Driver error.
        #[source]
        source: BoxError,
    },
    /// The store did not answer within the configured time. Retryable.
    #[error("session store did not answer within {0:?}")]
    Timeout(Duration),
    /// Any other store failure. Not retryable.
    #[error("session store failed")]
    Backend {
        /// Driver error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// `true` for transient failures where the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout(_))
    }

    /// An [`Error::Unavailable`] wrapping `source`.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            source: source.into(),
        }
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            source: source.into(),
        }
    }
}

/// Runs `operation` with a deadline; elapsing becomes [`Error::Timeout`].
///
/// Stores wrap every network operation in this so that a hung server costs a bounded time.
pub async fn with_timeout<T>(
    limit: Duration,
    operation: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(limit)),
    }
}
