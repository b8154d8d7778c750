//! The conformance suite for [`SessionRepository`](session_core::SessionRepository)
//! implementations: every rule of the contract's `# Behavior` sections as a case, run against a
//! real server.
//!
//! A store provides a [`StoreFixture`] (how to open repositories on an isolated namespace) and
//! expands [`conformance_suite!`] as the `main` of a test file declared with `harness = false`:
//! one test per case, plus a summary test printing how many cases apply. Cases the store's
//! [`Capabilities`] rule out show as `ignored` with the requirement they miss, and every case of
//! a store whose server was not found shows as `ignored` with that reason: `passed` counts only
//! cases that ran against a server.
//!
//! A third-party store runs the suite like this (here on the in-memory store), in
//! `tests/conformance.rs` with `[[test]] name = "conformance"` and `harness = false` in its
//! `Cargo.toml`:
//!
//! ```no_run
//! use std::sync::Arc;
//! use session_conformance::{conformance_suite, StoreFixture};
//! use session_core::{async_trait, Result, SessionRepository, SessionSettings};
//!
//! struct MyFixture(session_memory::MemoryStore);
//!
//! #[async_trait]
//! impl StoreFixture for MyFixture {
//!     fn name(&self) -> &str { "my-store" }
//!     async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
//!         Ok(Arc::new(self.0.with_settings(settings)))
//!     }
//! }
//!
//! conformance_suite!(|| async { Some(MyFixture(session_memory::MemoryStore::new())) });
//! # // rustdoc wraps this example in a `main` of its own.
//! ```
//!
//! The crate starts no server: the fixture connects to one however the store's tests provide
//! it (a URL from the environment, a container, a process), and returns `None` when there is
//! none. The fault cases ([`faults`]) crash and freeze a server through [`ServerControl`]. See
//! the crate README for a walk from zero to a green run.
#![deny(missing_docs)]
// A test library: a broken expectation is reported by panicking, as in any test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cases;
mod control;
pub mod faults;
mod fixture;
mod migrating;
mod registry;
pub mod runner;
mod support;

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use session_core::{Capabilities, SessionSettings};

pub use control::{ControlError, ServerControl};
pub use fixture::StoreFixture;
pub use migrating::{MigratingFixture, SessionsStart};
pub use registry::Needs;
pub use session_core::testing::RawShape;
pub use support::{short_lived, MARGIN, SHORT_IDLE};

/// Upper bound on one case, so that a hanging store fails the case instead of the CI run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// A registered conformance case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Function name in [`cases`].
    pub name: &'static str,
    /// The expected behaviour, in one line.
    pub doc: &'static str,
    /// What the store must offer for the case to apply (all of them).
    pub needs: &'static [Needs],
    /// Runs the case on a fixture; panics on a contract violation.
    pub run: for<'a> fn(&'a dyn StoreFixture) -> CaseFuture<'a>,
}

/// The future of a running case.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

impl Case {
    /// Whether the case applies to a store with these capabilities whose fixture is `fixture`.
    pub fn applies_to(&self, capabilities: &Capabilities, fixture: &dyn StoreFixture) -> bool {
        self.needs.iter().all(|need| match need {
            Needs::Nothing => true,
            Needs::PrincipalIndex => capabilities.principal_index,
            Needs::NoPrincipalIndex => !capabilities.principal_index,
            Needs::LifecycleEvents => capabilities.lifecycle_events,
            Needs::ExpiryEvents => capabilities.expiry_events,
            Needs::NoEvents => !capabilities.lifecycle_events && !capabilities.expiry_events,
            Needs::Import => capabilities.import,
            Needs::NoImport => !capabilities.import,
            Needs::RawWrites => fixture.can_write_raw(),
            Needs::RawShapes => !fixture.raw_shapes().is_empty(),
        })
    }

    /// The requirements as written in the registry, e.g. `PrincipalIndex & RawWrites`.
    pub fn needs_text(&self) -> String {
        let needs: Vec<String> = self.needs.iter().map(|need| format!("{need:?}")).collect();
        needs.join(" & ")
    }
}

pub use cases::CASES;

/// Runs the suite as the `main` of a test binary (`harness = false`): one trial per case, plus
/// `conformance_summary`, for each store given as `"prefix" => factory` (or just `factory`).
///
/// `factory` is callable as `Fn() -> impl Future<Output = Option<F>> + Send` with
/// `F: StoreFixture`; it runs once per case, so every case gets its own namespace. `None` means
/// the store's server is unavailable: every case is reported as ignored with that reason
/// (provisioning has printed why, or failed the run under `SESSION_TEST_REQUIRE`). Cases the
/// store's capabilities rule out are ignored with the requirement they miss. Each case runs on
/// its own Tokio runtime, so the calling crate needs no Tokio macros.
#[macro_export]
macro_rules! conformance_suite {
    ($($prefix:literal => $factory:expr),+ $(,)?) => {
        fn main() {
            $crate::runner::run(vec![$($crate::runner::Suite::new($prefix, $factory)),+]);
        }
    };
    ($factory:expr $(,)?) => {
        $crate::conformance_suite!("" => $factory);
    };
}

/// Writes a line to the real stderr, past the test harness's output capture, so that skips and
/// counts show up in CI logs.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start a Tokio runtime for the conformance case")
}

async fn capabilities_of(fixture: &dyn StoreFixture) -> Capabilities {
    match fixture.open(SessionSettings::default()).await {
        Ok(repository) => repository.capabilities(),
        Err(error) => panic!(
            "fixture `{}` cannot open a repository: {error}",
            fixture.name()
        ),
    }
}

/// A name unique to this process and call, usable as a key prefix, table or database name:
/// lower-case ASCII letters, digits and `_`, starting with `prefix`.
pub fn namespace(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
