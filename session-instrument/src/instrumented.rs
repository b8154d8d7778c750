//! The wrapper.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use session_core::raw::{undecodable_records, SessionRecord};
use session_core::{
    async_trait, Capabilities, EventError, EventSubscription, Operation, Result, Session,
    SessionEvent, SessionId, SessionInfo, SessionKey, SessionRepository, SessionSettings,
};
use tracing::field::Empty;
use tracing::Instrument as _;

use crate::handles::Handles;
use crate::outcome::outcome_of;

/// Hex digits of the session key shown in spans: enough to follow one session through the
/// logs, never the token (a key cannot load a session).
const KEY_PREFIX: usize = 8;

/// A session store with a span and metrics per call (see the crate docs). `store` names the
/// store in both (`memory`, `redis`, `postgres`, …).
#[derive(Debug, Clone)]
pub struct Instrumented<R> {
    inner: R,
    store: &'static str,
    handles: Arc<Handles>,
}

impl<R: SessionRepository> Instrumented<R> {
    /// Wraps `inner`, naming it `store` in spans and metric labels. If the store emits events
    /// and a Tokio runtime is running, a task counts them (`session_store_events_total`) until
    /// the store is dropped.
    pub fn new(inner: R, store: &'static str) -> Self {
        let handles = Arc::new(Handles::new(store));
        let capabilities = inner.capabilities();
        if capabilities.lifecycle_events || capabilities.expiry_events {
            if let (Ok(runtime), Ok(events)) =
                (tokio::runtime::Handle::try_current(), inner.subscribe())
            {
                runtime.spawn(count_events(events, Arc::clone(&handles)));
            }
        }
        Instrumented {
            inner,
            store,
            handles,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Runs one call of the store inside its span and records its outcome, duration and sizes.
    /// `sizes` gives the attribute count and bytes moved, once the call is over.
    /// `key` is computed only when the span is recorded (hashing an id is not free).
    async fn observe<T>(
        &self,
        operation: Operation,
        key: impl FnOnce() -> Option<SessionKey>,
        call: impl Future<Output = Result<T>>,
        sizes: impl FnOnce(&Result<T>) -> Option<(usize, usize)>,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            target: "session_store",
            "session_store",
            store = self.store,
            operation = operation.as_str(),
            session = Empty,
            outcome = Empty,
            attributes = Empty,
            bytes = Empty,
        );
        if !span.is_disabled() {
            if let Some(key) = key() {
                let hex = key.to_hex();
                span.record("session", &hex[..KEY_PREFIX]);
            }
        }
        let started = Instant::now();
        // A disabled span is not entered on every poll: no clone, no wrapper future.
        let result = if span.is_disabled() {
            call.await
        } else {
            call.instrument(span.clone()).await
        };
        let elapsed = started.elapsed();
        let outcome = outcome_of(&result);
        span.record("outcome", outcome);
        if !span.is_disabled() {
            if let Some((attributes, bytes)) = sizes(&result) {
                span.record("attributes", attributes);
                span.record("bytes", bytes);
            }
        }
        let (calls, latency) = self.handles.call(operation, outcome);
        calls.increment(1);
        latency.record(elapsed);
        match &result {
            Err(session_core::Error::Conflict { .. }) => self.handles.conflicts().increment(1),
            Err(error) if error.is_retryable() => {
                self.handles.retryable(operation).increment(1);
            }
            _ => {}
        }
        self.handles.report_undecodable(undecodable_records());
        // The span's own line, with the outcome: `RUST_LOG=session_store=debug`.
        span.in_scope(|| tracing::debug!(target: "session_store", elapsed_us = elapsed.as_micros() as u64, "{outcome}"));
        result
    }
}

/// Counts the store's events by kind until the store is gone.
async fn count_events(mut events: EventSubscription, handles: Arc<Handles>) {
    loop {
        let (label, count) = match events.recv().await {
            Ok(SessionEvent::Created(_)) => ("created", 1),
            Ok(SessionEvent::Deleted(_)) => ("deleted", 1),
            Ok(SessionEvent::Expired(_)) => ("expired", 1),
            Ok(SessionEvent::Evicted(_)) => ("evicted", 1),
            Ok(SessionEvent::IdChanged { .. }) => ("id_changed", 1),
            Ok(_) => continue,
            Err(EventError::Lagged(missed)) => ("missed", missed),
            Err(_) => return,
        };
        handles.event(label).increment(count);
    }
}

fn session_sizes(session: &Session) -> Option<(usize, usize)> {
    Some((session.len(), session.size()))
}

#[async_trait]
impl<R: SessionRepository> SessionRepository for Instrumented<R> {
    fn settings(&self) -> &Arc<SessionSettings> {
        self.inner.settings()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let (attributes, bytes) = (session.len(), session.size());
        let key = session.key();
        let created = self.inner.create(session);
        self.observe(
            Operation::Create,
            || Some(key),
            created,
            |_| Some((attributes, bytes)),
        )
        .await
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        self.observe(
            Operation::Find,
            || Some(id.key()),
            self.inner.find(id),
            |found| match found {
                Ok(Some(session)) => session_sizes(session),
                _ => None,
            },
        )
        .await
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let (attributes, bytes) = (session.len(), session.size());
        let key = session.key();
        let saved = self.inner.save(session);
        self.observe(
            Operation::Save,
            || Some(key),
            saved,
            |_| Some((attributes, bytes)),
        )
        .await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.observe(
            Operation::Touch,
            || Some(id.key()),
            self.inner.touch(id),
            |_| None,
        )
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<()> {
        self.observe(
            Operation::Delete,
            || Some(id.key()),
            self.inner.delete(id),
            |_| None,
        )
        .await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        let deleted = self.inner.delete_by_key(key);
        self.observe(Operation::Delete, || Some(*key), deleted, |_| None)
            .await
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        let key = session.key();
        let changed = self.inner.change_id(session);
        self.observe(Operation::ChangeId, || Some(key), changed, |_| None)
            .await
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        let found = self.inner.find_by_principal(principal);
        self.observe(Operation::FindByPrincipal, || None, found, |_| None)
            .await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        let deleted = self.inner.delete_by_principal(principal);
        self.observe(Operation::DeleteByPrincipal, || None, deleted, |_| None)
            .await
    }

    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        let imported = self.inner.import(id, record);
        let sizes = |_: &Result<bool>| Some((record.attributes.len(), record.attributes_size()));
        self.observe(Operation::Import, || Some(id.key()), imported, sizes)
            .await
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        self.inner.subscribe()
    }
}
