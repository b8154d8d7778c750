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
//!
//! Metric handles are registered on a wrapper's first call with each label set and then only
//! updated, so **install the recorder before the first call** (without one they are no-ops). A
//! call costs two clock reads, a disabled span check and a few atomic updates; the session key
//! (a hash) is computed only when the span is recorded.
#![deny(missing_docs)]

mod handles;
mod instrumented;
mod outcome;

pub use instrumented::Instrumented;
pub use outcome::outcome_of;
