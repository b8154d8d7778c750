//! Tracing spans and metrics for any session store, once: [`Instrumented`] implements
//! `SessionRepository` around another.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> session_core::Result<()> {
//! use std::sync::Arc;
//! use session_core::{SessionRepository, SessionRepositoryExt};
//! use session_instrument::Instrumented;
//!
//! let store: Arc<dyn SessionRepository> =
//!     Arc::new(Instrumented::new(session_memory::MemoryStore::new(), "memory"));
//! let mut session = store.new_session();
//! store.create(&mut session).await?; // one `session_store` span, one count, one timing
//! # Ok(()) }
//! ```
//!
//! **Spans.** One `session_store` span per call, at `debug`, with `store`, `operation`,
//! `outcome` (`ok`, `not_found`, `conflict`, `too_large`, `invalid_input`, `unavailable`,
//! `timeout`, `unsupported`, `config`, `backend`, `encode`, `decode`), `session` (the first hex
//! digits of the session's *key*, never its token), and where they apply `attributes` (count)
//! and `bytes` (encoded attribute bytes moved). `RUST_LOG=session_store=debug` shows one line
//! per store call.
//!
//! **Metrics**, through the [`metrics`] facade (install any recorder, e.g.
//! `metrics-exporter-prometheus`; without one they cost an atomic load):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `session_store_operations_total` | counter | `store`, `operation`, `outcome` |
//! | `session_store_operation_seconds` | histogram | `store`, `operation`, `outcome` |
//! | `session_store_conflicts_total` | counter | `store` |
//! | `session_store_retryable_errors_total` | counter | `store`, `operation` |
//! | `session_store_undecodable_records` | counter (absolute) | — (process-wide) |
//! | `session_store_events_total` | counter | `store`, `event` (`created`, `deleted`, `expired`, `evicted`, `id_changed`, `missed` when the counter fell behind the store's event stream) |
//!
//! Events are counted where the store emits them ([`Capabilities`](session_core::Capabilities)),
//! by a task the wrapper starts when it is made inside a Tokio runtime. With Redis, every
//! instance receives every instance's events: sum one instance's counter, not all of them.
//!
//! Metric handles are registered on a wrapper's first call with each label set and then only
//! updated, so **install the recorder before the first call** (without one they are no-ops). A
//! call costs two clock reads, a disabled span check and a few atomic updates; the session key
//! (a hash) is computed only when the span is recorded.
//!
//! **Spans only**: [`Instrumented::without_metrics`]. A call then costs one check of whether
//! a subscriber wants `session_store` spans; when none does, the wrapped store's own future is
//! returned as it is (no box, no clock, no span).
//!
//! **Overhead** on the in-memory store's cycle (find + save, session-bench, counted in
//! instructions under callgrind, since wall-clock rows on these machines swing by more than the
//! effect): +0.06% with metrics off and no subscriber, +8.5% with the Prometheus exporter
//! recording every call. Against a networked store the same instructions are a smaller share.
#![deny(missing_docs)]

mod handles;
mod instrumented;
mod outcome;

pub use instrumented::Instrumented;

/// Bucket bounds, in seconds, for `session_store_operation_seconds` (50 µs to 5 s): give them
/// to the exporter (e.g. `PrometheusBuilder::set_buckets_for_metric`) to export a histogram
/// that aggregates across instances. Without buckets, `metrics-exporter-prometheus` keeps every
/// sample until its next upkeep and folds it into a quantile sketch, which costs the calling
/// service more per call.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
pub use outcome::outcome_of;
