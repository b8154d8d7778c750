//! Metric handles, registered once per label set and then only updated: a call costs a few
//! atomic operations, not a key built and looked up in the recorder. Registered on first use,
//! so the recorder must be installed before the first call (without one, the handles are
//! no-ops and cost nothing).

use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use session_core::Operation;

/// Every operation the wrapper reports, in a fixed order.
const OPERATIONS: [Operation; 10] = [
    Operation::Create,
    Operation::Find,
    Operation::Save,
    Operation::Touch,
    Operation::Delete,
    Operation::ChangeId,
    Operation::FindByPrincipal,
    Operation::DeleteByPrincipal,
    Operation::Import,
    Operation::Subscribe,
];

/// Every outcome label, in a fixed order (see `outcome_of`).
pub(crate) const OUTCOMES: [&str; 12] = [
    "ok",
    "not_found",
    "conflict",
    "too_large",
    "invalid_input",
    "config",
    "unsupported",
    "encode",
    "decode",
    "unavailable",
    "timeout",
    "backend",
];

type PerCall = OnceLock<(Counter, Histogram)>;

/// The handles of one wrapped store.
#[derive(Debug)]
pub(crate) struct Handles {
    store: &'static str,
    calls: Vec<PerCall>,
    retryable: Vec<OnceLock<Counter>>,
    conflicts: OnceLock<Counter>,
    undecodable: OnceLock<Counter>,
    /// The process-wide undecodable count last reported, so that the counter is set only when
    /// it moved (almost never), not on every call.
    undecodable_seen: std::sync::atomic::AtomicU64,
    events: [OnceLock<Counter>; EVENTS.len()],
}

/// Every event label, in a fixed order (see `event_label`).
const EVENTS: [&str; 6] = [
    "created",
    "deleted",
    "expired",
    "evicted",
    "id_changed",
    "missed",
];

impl Handles {
    pub(crate) fn new(store: &'static str) -> Self {
        Handles {
            store,
            calls: (0..OPERATIONS.len() * OUTCOMES.len())
                .map(|_| OnceLock::new())
                .collect(),
            retryable: (0..OPERATIONS.len()).map(|_| OnceLock::new()).collect(),
            conflicts: OnceLock::new(),
            undecodable: OnceLock::new(),
            undecodable_seen: std::sync::atomic::AtomicU64::new(u64::MAX),
            events: Default::default(),
        }
    }

    fn operation_index(operation: Operation) -> usize {
        OPERATIONS
            .iter()
            .position(|known| *known == operation)
            .unwrap_or(OPERATIONS.len() - 1)
    }

    /// The call counter and latency histogram of `operation` with `outcome`.
    pub(crate) fn call(
        &self,
        operation: Operation,
        outcome: &'static str,
    ) -> &(Counter, Histogram) {
        let operation_index = Self::operation_index(operation);
        let outcome_index = OUTCOMES
            .iter()
            .position(|known| *known == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.calls[operation_index * OUTCOMES.len() + outcome_index].get_or_init(|| {
            let labels = [
                ("store", self.store),
                ("operation", operation.as_str()),
                ("outcome", outcome),
            ];
            (
                metrics::counter!("session_store_operations_total", &labels),
                metrics::histogram!("session_store_operation_seconds", &labels),
            )
        })
    }

    pub(crate) fn retryable(&self, operation: Operation) -> &Counter {
        self.retryable[Self::operation_index(operation)].get_or_init(|| {
            metrics::counter!(
                "session_store_retryable_errors_total",
                "store" => self.store,
                "operation" => operation.as_str()
            )
        })
    }

    pub(crate) fn conflicts(&self) -> &Counter {
        self.conflicts.get_or_init(
            || metrics::counter!("session_store_conflicts_total", "store" => self.store),
        )
    }

    /// Reports the process-wide count of undecodable records, if it moved since the last call.
    pub(crate) fn report_undecodable(&self, count: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        // A load first: a write on every call would bounce this line between cores.
        if self.undecodable_seen.load(Relaxed) != count
            && self.undecodable_seen.swap(count, Relaxed) != count
        {
            self.undecodable
                .get_or_init(|| metrics::counter!("session_store_undecodable_records"))
                .absolute(count);
        }
    }

    /// The counter of events labelled `event` (one of `EVENTS`; anything else counts as the
    /// last label).
    pub(crate) fn event(&self, event: &'static str) -> &Counter {
        let index = EVENTS
            .iter()
            .position(|known| *known == event)
            .unwrap_or(EVENTS.len() - 1);
        self.events[index].get_or_init(|| {
            metrics::counter!(
                "session_store_events_total",
                "store" => self.store,
                "event" => EVENTS[index]
            )
        })
    }
}
