//! The suite as a test binary: one trial per case and per store, run by libtest-mimic, so that
//! cargo's own output says which cases ran, which do not apply (ignored, with the reason) and
//! which could not run because the store's server was not found (ignored, with the reason).
//! `passed` counts only cases that ran against a server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::{capabilities_of, report, runtime, Case, StoreFixture, CASES, CASE_TIMEOUT};

type BoxedFixture = Box<dyn StoreFixture>;
type Factory = dyn Fn() -> Pin<Box<dyn Future<Output = Option<BoxedFixture>> + Send>> + Send + Sync;

/// The cases of the suite on one store, named `<prefix>::<case>` in the test output.
pub struct Suite {
    prefix: String,
    factory: Arc<Factory>,
    divergences: &'static [KnownDivergence],
}

/// A case a server is known to fail because the server departs from what it claims to
/// implement (a wire-compatible server that is not the real thing), not because the store is
/// wrong. Such a case still runs: failing, it shows as ignored with the reason; passing, it
/// fails the run (so that the list never outlives the divergence) unless the divergence is
/// [intermittent](KnownDivergence::intermittent).
#[derive(Debug, Clone, Copy)]
pub struct KnownDivergence {
    /// The case's function name.
    pub case: &'static str,
    /// What the server does differently, in one line (the store's README has a reproduction).
    pub reason: &'static str,
    /// The divergence shows only when timing meets it (a server that compares times to the
    /// second fails a sub-second check now and then): a pass is a pass.
    pub intermittent: bool,
}

impl KnownDivergence {
    /// A divergence that fails the case every time.
    pub const fn new(case: &'static str, reason: &'static str) -> Self {
        KnownDivergence {
            case,
            reason,
            intermittent: false,
        }
    }

    /// A divergence that fails the case only now and then.
    pub const fn intermittent(case: &'static str, reason: &'static str) -> Self {
        KnownDivergence {
            case,
            reason,
            intermittent: true,
        }
    }
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("prefix", &self.prefix)
            .field("divergences", &self.divergences)
            .finish()
    }
}

impl Suite {
    /// The suite on the fixtures `factory` makes: it runs once per case, so that every case
    /// gets its own namespace; `None` means the store's server was not found (provisioning has
    /// printed why, or failed the run under `SESSION_TEST_REQUIRE`), and every case of this
    /// suite is then ignored with that reason.
    pub fn new<F, Fut, Fx>(prefix: impl Into<String>, factory: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Fx>> + Send + 'static,
        Fx: StoreFixture,
    {
        Suite {
            prefix: prefix.into(),
            factory: Arc::new(move || {
                let fixture = factory();
                Box::pin(async move { fixture.await.map(|f| Box::new(f) as BoxedFixture) })
            }),
            divergences: &[],
        }
    }

    /// Marks cases this store's server is known to fail (see [`KnownDivergence`]).
    pub fn with_known_divergences(mut self, divergences: &'static [KnownDivergence]) -> Self {
        self.divergences = divergences;
        self
    }

    fn name(&self, case: &str) -> String {
        if self.prefix.is_empty() {
            case.to_owned()
        } else {
            format!("{}::{case}", self.prefix)
        }
    }

    fn trials(&self) -> Vec<Trial> {
        let mut trials: Vec<Trial> = CASES
            .iter()
            .map(|case| {
                let factory = Arc::clone(&self.factory);
                let divergence = self.divergences.iter().find(|d| d.case == case.name);
                Trial::ignorable_test(self.name(case.name), move || match divergence {
                    None => run_case(case, &*factory),
                    Some(divergence) => run_divergent_case(case, &*factory, divergence),
                })
            })
            .collect();
        let factory = Arc::clone(&self.factory);
        trials.push(Trial::ignorable_test(
            self.name("conformance_summary"),
            move || summary(&*factory),
        ));
        trials
    }
}

/// Runs `suites` as the test binary's `main` (a `[[test]]` with `harness = false`), with
/// cargo's usual test options (filters, `--test-threads`, `--list`), and exits.
pub fn run(suites: Vec<Suite>) -> ! {
    let arguments = Arguments::from_args();
    let trials = suites.iter().flat_map(Suite::trials).collect();
    libtest_mimic::run(&arguments, trials).exit()
}

const NO_SERVER: &str = "no server for this store (see the SKIPPED line)";

fn run_case(case: &'static Case, factory: &Factory) -> Result<Completion, Failed> {
    runtime().block_on(async {
        let Some(fixture) = factory().await else {
            return Ok(Completion::ignored_with(NO_SERVER));
        };
        let capabilities = capabilities_of(&*fixture).await;
        if !case.applies_to(&capabilities, &*fixture) {
            return Ok(Completion::ignored_with(format!(
                "not applicable: needs {}",
                case.needs_text()
            )));
        }
        match tokio::time::timeout(CASE_TIMEOUT, (case.run)(&*fixture)).await {
            Ok(()) => Ok(Completion::Completed),
            Err(_) => Err(Failed::from(format!(
                "case {} on `{}` did not finish within {CASE_TIMEOUT:?}",
                case.name,
                fixture.name()
            ))),
        }
    })
}

/// Runs a case the server is known to fail: its failure is the expected outcome (ignored, with
/// the reason); a pass means the divergence is gone and the list must shrink.
fn run_divergent_case(
    case: &'static Case,
    factory: &Factory,
    divergence: &KnownDivergence,
) -> Result<Completion, Failed> {
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case, factory)));
    match outcome {
        Ok(Ok(Completion::Completed)) if divergence.intermittent => Ok(Completion::Completed),
        Ok(Ok(Completion::Completed)) => Err(Failed::from(format!(
            "listed as a known divergence of this server ({}), but passed: remove it from the list",
            divergence.reason
        ))),
        Ok(Ok(ignored)) => Ok(ignored),
        Ok(Err(_)) | Err(_) => Ok(Completion::ignored_with(format!(
            "known divergence of this server, failed as expected: {}",
            divergence.reason
        ))),
    }
}

/// Prints how many cases apply to the store and which do not (and why).
fn summary(factory: &Factory) -> Result<Completion, Failed> {
    runtime().block_on(async {
        let Some(fixture) = factory().await else {
            return Ok(Completion::ignored_with(NO_SERVER));
        };
        let capabilities = capabilities_of(&*fixture).await;
        let (run, skipped): (Vec<&Case>, Vec<&Case>) = CASES
            .iter()
            .partition(|case| case.applies_to(&capabilities, &*fixture));
        let skipped: Vec<String> = skipped
            .iter()
            .map(|case| format!("{} (needs {})", case.name, case.needs_text()))
            .collect();
        report(&format!(
            "conformance `{}`: {} of {} cases run{}{}",
            fixture.name(),
            run.len(),
            CASES.len(),
            if skipped.is_empty() {
                ""
            } else {
                "; not applicable: "
            },
            skipped.join(", ")
        ));
        if run.is_empty() {
            return Err(Failed::from("no case applies to this store"));
        }
        Ok(Completion::Completed)
    })
}
