//! The one error type every store returns.

use std::fmt;
use std::time::Duration;

/// A boxed error from a driver or codec, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository operation an error happened in, carried by [`Error::Unavailable`],
/// [`Error::Timeout`] and [`Error::Backend`] so that a log line says what failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Opening the store (connecting, migrating, reading server settings).
    Open,
    /// [`create`](crate::SessionRepository::create).
    Create,
    /// [`find`](crate::SessionRepository::find).
    Find,
    /// [`save`](crate::SessionRepository::save).
    Save,
    /// [`touch`](crate::SessionRepository::touch).
    Touch,
    /// [`delete`](crate::SessionRepository::delete) or
    /// [`delete_by_key`](crate::SessionRepository::delete_by_key).
    Delete,
    /// [`change_id`](crate::SessionRepository::change_id).
    ChangeId,
    /// [`find_by_principal`](crate::SessionRepository::find_by_principal).
    FindByPrincipal,
    /// [`delete_by_principal`](crate::SessionRepository::delete_by_principal).
    DeleteByPrincipal,
    /// [`subscribe`](crate::SessionRepository::subscribe) and event delivery.
    Subscribe,
    /// Background work of a store (purging expired sessions, index upkeep).
    Maintenance,
    /// [`import`](crate::SessionRepository::import).
    Import,
}

impl Operation {
    /// The operation's name as the trait spells it (`change_id`, `find_by_principal`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Open => "open",
            Operation::Create => "create",
            Operation::Find => "find",
            Operation::Save => "save",
            Operation::Touch => "touch",
            Operation::Delete => "delete",
            Operation::ChangeId => "change_id",
            Operation::FindByPrincipal => "find_by_principal",
            Operation::DeleteByPrincipal => "delete_by_principal",
            Operation::Subscribe => "subscribe",
            Operation::Maintenance => "maintenance",
            Operation::Import => "import",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which store and which operation an error comes from. Either may be unknown (an error made
/// by a helper before the store's runner added them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorContext {
    /// The store kind, e.g. `redis`, `postgres`, `memory`.
    pub store: Option<&'static str>,
    /// The operation.
    pub operation: Option<Operation>,
}

impl ErrorContext {
    /// A context naming both.
    pub const fn new(store: &'static str, operation: Operation) -> Self {
        ErrorContext {
            store: Some(store),
            operation: Some(operation),
        }
    }
}

/// ` (redis, save)`, or nothing when both are unknown.
impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.store, self.operation) {
            (Some(store), Some(op)) => write!(f, " ({store}, {op})"),
            (Some(store), None) => write!(f, " ({store})"),
            (None, Some(op)) => write!(f, " ({op})"),
            (None, None) => Ok(()),
        }
    }
}

/// Everything that can go wrong in a session operation.
///
/// Variants are semantic, so callers can decide without knowing the store: [`Error::is_retryable`]
/// separates transient trouble (server down, timeout) from permanent failures, and the HTTP layer
/// maps `Unavailable`/`Timeout` to 503. Driver errors are kept as `source`; the store and the
/// operation travel in an [`ErrorContext`], and [`Error::report`] prints the whole cause chain.
///
/// # Exhausted retries
///
/// Where the contract makes a store retry internally (a fresh id after a collision in `create`
/// or `change_id`, a compare-and-set lost to concurrent saves), running out of attempts is
/// [`Error::Unavailable`] on every store: the contention is transient and the same call may
/// succeed later. The source says what was retried.
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
    /// A store URL or configuration value is wrong (unknown option, bad number, a scheme whose
    /// store is not compiled in). Raised when the store is configured, never per request.
    #[error("invalid session store configuration: {0}")]
    Config(String),
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
    #[error("session store unavailable{context}")]
    Unavailable {
        /// Store and operation.
        context: ErrorContext,
        /// Driver error.
        #[source]
        source: BoxError,
    },
    /// The store did not answer within the configured time. Retryable.
    #[error("session store did not answer within {after:?}{context}")]
    Timeout {
        /// Store and operation.
        context: ErrorContext,
        /// The configured bound that elapsed.
        after: Duration,
    },
    /// Any other store failure. Not retryable.
    #[error("session store failed{context}")]
    Backend {
        /// Store and operation.
        context: ErrorContext,
        /// Driver error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// `true` for transient failures where the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// An [`Error::Unavailable`] wrapping `source`.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            context: ErrorContext::default(),
            source: source.into(),
        }
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            context: ErrorContext::default(),
            source: source.into(),
        }
    }

    /// An [`Error::Timeout`] after `after`.
    pub fn timeout(after: Duration) -> Self {
        Error::Timeout {
            context: ErrorContext::default(),
            after,
        }
    }

    /// The [`Error::Unavailable`] of an internal retry that ran out of attempts (see
    /// "Exhausted retries" above).
    pub fn retries_exhausted(what: &str, attempts: usize) -> Self {
        Error::unavailable(format!("{what}: gave up after {attempts} attempts"))
    }

    /// Store and operation of a store failure; `None` for the other variants.
    pub fn context(&self) -> Option<&ErrorContext> {
        match self {
            Error::Unavailable { context, .. }
            | Error::Timeout { context, .. }
            | Error::Backend { context, .. } => Some(context),
            _ => None,
        }
    }

    /// Fills in the store and operation where they are not known yet (an inner helper's
    /// context wins: it is the more precise one).
    pub fn during(mut self, store: &'static str, operation: Operation) -> Self {
        if let Error::Unavailable { context, .. }
        | Error::Timeout { context, .. }
        | Error::Backend { context, .. } = &mut self
        {
            context.store.get_or_insert(store);
            context.operation.get_or_insert(operation);
        }
        self
    }

    /// Displays this error followed by every source in its chain, `: `-separated, for log
    /// lines: `session store unavailable (redis, save): connection refused`.
    pub fn report(&self) -> ErrorReport<'_> {
        ErrorReport(self)
    }
}

/// This error and its whole cause chain on one line (see [`Error::report`]).
#[derive(Debug)]
pub struct ErrorReport<'a>(&'a Error);

impl fmt::Display for ErrorReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Runs `operation` with a deadline; elapsing becomes [`Error::Timeout`].
///
/// Stores wrap every network operation in this (or in
/// [`raw::Runner::run`](crate::raw::Runner::run), which also names the store and operation) so
/// that a hung server costs a bounded time.
pub async fn with_timeout<T>(
    limit: Duration,
    operation: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => result,
        Err(_) => Err(Error::timeout(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_store_operation_and_every_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = Error::unavailable(io).during("redis", Operation::Save);
        assert_eq!(
            error.report().to_string(),
            "session store unavailable (redis, save): connection refused"
        );
        // The inner context is kept.
        let error = error.during("memory", Operation::Find);
        assert_eq!(
            error.context(),
            Some(&ErrorContext::new("redis", Operation::Save))
        );
        assert!(Error::timeout(Duration::from_secs(1))
            .during("postgres", Operation::Touch)
            .to_string()
            .ends_with("(postgres, touch)"));
        assert!(Error::retries_exhausted("change_id", 4).is_retryable());
    }
}
