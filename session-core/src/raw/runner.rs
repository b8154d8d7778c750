//! One bound and one name for every operation of a store.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Operation, Result};

/// Runs a store's operations with its timeout, and names the store and the operation in the
/// errors they return ([`Error::during`]). Every store keeps one and wraps each network
/// operation in [`Runner::run`], so that a hung server costs a bounded time and a log line says
/// what failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runner {
    store: &'static str,
    timeout: Duration,
}

impl Runner {
    /// A runner for the store kind `store` (`redis`, `postgres`, ...) bounding each operation
    /// by `timeout`.
    pub const fn new(store: &'static str, timeout: Duration) -> Self {
        Runner { store, timeout }
    }

    /// The store kind.
    pub const fn store(&self) -> &'static str {
        self.store
    }

    /// The bound on each operation.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `future` within the timeout; elapsing is [`Error::Timeout`], and a store error gets
    /// this store and `operation` as its context.
    pub async fn run<T>(
        &self,
        operation: Operation,
        future: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.during(self.store, operation)),
            Err(_) => Err(Error::timeout(self.timeout).during(self.store, operation)),
        }
    }
}

/// A short, growing, jittered pause before retry `attempt + 1` of a compare-and-swap or
/// version-checked write that lost to another process: 0.2 ms doubling up to 6.4 ms, plus up
/// to 0.5 ms of jitter so that two processes that collided do not collide again in step.
pub async fn backoff(attempt: usize) {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos())
            % 500,
    );
    let base = 200u64 << attempt.min(5);
    tokio::time::sleep(Duration::from_micros(base + jitter)).await;
}
