//! One bound and one name for every operation of a store.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
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
    /// this store and `operation` as its context. The timeout counts from this call.
    pub fn run<F, T>(&self, operation: Operation, future: F) -> Run<F>
    where
        F: Future<Output = Result<T>>,
    {
        Run {
            timed: tokio::time::timeout(self.timeout, future),
            runner: *self,
            operation,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Runner::run`]: the operation's own future under a timeout, and nothing
    /// else. Written out rather than as an `async fn` because such a function keeps its future
    /// argument twice in its state (once as the argument, once inside the timeout it is moved
    /// into), and every store operation's future — each a few kilobytes of driver and pool
    /// state — then cost twice its size to allocate and to move on every call.
    #[must_use = "futures do nothing unless polled"]
    pub struct Run<F> {
        #[pin]
        timed: tokio::time::Timeout<F>,
        runner: Runner,
        operation: Operation,
    }
}

impl<F, T> Future for Run<F>
where
    F: Future<Output = Result<T>>,
{
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.project();
        let store = this.runner.store;
        Poll::Ready(match ready!(this.timed.poll(cx)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.during(store, *this.operation)),
            Err(_) => Err(Error::timeout(this.runner.timeout).during(store, *this.operation)),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNER: Runner = Runner::new("teststore", Duration::from_millis(50));

    #[tokio::test]
    async fn run_passes_values_through_names_errors_and_bounds_the_time() {
        let value = RUNNER.run(Operation::Find, async { Ok(7) }).await;
        assert_eq!(value.ok(), Some(7));

        let failed = RUNNER
            .run(Operation::Save, async {
                Err::<(), _>(Error::unavailable("connection refused"))
            })
            .await
            .expect_err("the store's error");
        let context = failed.context().expect("a store error has a context");
        assert_eq!(context.store, Some("teststore"));
        assert_eq!(context.operation, Some(Operation::Save));
        assert!(failed.is_retryable());

        let hung = RUNNER
            .run(Operation::Touch, std::future::pending::<Result<()>>())
            .await
            .expect_err("a hung operation times out");
        assert!(matches!(hung, Error::Timeout { after, .. } if after == RUNNER.timeout()));
        assert_eq!(
            hung.context().and_then(|c| c.operation),
            Some(Operation::Touch)
        );
    }

    #[tokio::test]
    async fn run_keeps_the_operation_once() {
        // A future of a store operation's size: the driver and pool state it holds.
        let big = [0u8; 2048];
        let operation = async move {
            tokio::task::yield_now().await;
            Ok(big.len())
        };
        let alone = std::mem::size_of_val(&operation);
        let run = RUNNER.run(Operation::Find, operation);
        // The operation, the timer and the names; an `async fn` wrapper held the operation
        // twice (its argument, and the timeout it moved it into).
        let overhead = std::mem::size_of_val(&run) - alone;
        assert!(
            overhead <= std::mem::size_of::<tokio::time::Sleep>() + 64,
            "Run adds {overhead} bytes to a {alone}-byte operation"
        );
        assert_eq!(run.await.ok(), Some(2048));
    }
}
