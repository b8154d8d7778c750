//! The wrapper.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use session_core::raw::{undecodable_records, SessionRecord, StoreCall};
use session_core::{
    Capabilities, EventError, EventSubscription, Operation, Result, Session, SessionEvent,
    SessionId, SessionInfo, SessionKey, SessionRepository, SessionSettings,
};
use tracing::field::Empty;
use tracing::Instrument as _;
use tracing::Span;

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
    metrics: bool,
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
            metrics: true,
        }
    }

    /// Spans only, no metrics. A call whose span is disabled (no subscriber wants
    /// `session_store` at `debug`) is then the wrapped store's own call: no clock read, no
    /// allocation, one branch.
    pub fn without_metrics(mut self) -> Self {
        self.metrics = false;
        self
    }

    /// Nothing would record this call: metrics are off and no subscriber wants its span.
    fn unobserved(&self) -> bool {
        !self.metrics && !tracing::enabled!(target: "session_store", tracing::Level::DEBUG)
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
        // Not `debug_span!` alone: with `tracing`'s `log` feature (which sqlx turns on) a
        // disabled span still goes through the `log` fallback on every record and event.
        let span = if tracing::enabled!(target: "session_store", tracing::Level::DEBUG) {
            tracing::debug_span!(
                target: "session_store",
                "session_store",
                store = self.store,
                operation = operation.as_str(),
                session = Empty,
                outcome = Empty,
                attributes = Empty,
                bytes = Empty,
            )
        } else {
            Span::none()
        };
        let traced = !span.is_disabled();
        if traced {
            if let Some(key) = key() {
                let hex = key.to_hex();
                span.record("session", &hex[..KEY_PREFIX]);
            }
        }
        let started = Instant::now();
        // A disabled span is not entered on every poll: no clone, no wrapper future.
        let result = if traced {
            call.instrument(span.clone()).await
        } else {
            call.await
        };
        let elapsed = started.elapsed();
        let outcome = outcome_of(&result);
        if self.metrics {
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
        }
        if traced {
            span.record("outcome", outcome);
            if let Some((attributes, bytes)) = sizes(&result) {
                span.record("attributes", attributes);
                span.record("bytes", bytes);
            }
            // The span's own line, with the outcome: `RUST_LOG=session_store=debug`.
            span.in_scope(|| tracing::debug!(target: "session_store", elapsed_us = elapsed.as_micros() as u64, "{outcome}"));
        }
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

impl<R: SessionRepository> SessionRepository for Instrumented<R> {
    fn settings(&self) -> &Arc<SessionSettings> {
        self.inner.settings()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn create<'a, 'b, 'c>(&'a self, session: &'b mut Session) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.create(session);
        }
        let (attributes, bytes) = (session.len(), session.size());
        let key = session.key();
        let created = self.inner.create(session);
        Box::pin(self.observe(
            Operation::Create,
            move || Some(key),
            created,
            move |_| Some((attributes, bytes)),
        ))
    }

    fn find<'a, 'b, 'c>(&'a self, id: &'b SessionId) -> StoreCall<'c, Option<Session>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.find(id);
        }
        Box::pin(self.observe(
            Operation::Find,
            || Some(id.key()),
            self.inner.find(id),
            |found| match found {
                Ok(Some(session)) => session_sizes(session),
                _ => None,
            },
        ))
    }

    fn save<'a, 'b, 'c>(&'a self, session: &'b mut Session) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.save(session);
        }
        let (attributes, bytes) = (session.len(), session.size());
        let key = session.key();
        let saved = self.inner.save(session);
        Box::pin(self.observe(
            Operation::Save,
            move || Some(key),
            saved,
            move |_| Some((attributes, bytes)),
        ))
    }

    fn touch<'a, 'b, 'c>(&'a self, id: &'b SessionId) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.touch(id);
        }
        Box::pin(self.observe(
            Operation::Touch,
            || Some(id.key()),
            self.inner.touch(id),
            |_| None,
        ))
    }

    fn delete<'a, 'b, 'c>(&'a self, id: &'b SessionId) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.delete(id);
        }
        Box::pin(self.observe(
            Operation::Delete,
            || Some(id.key()),
            self.inner.delete(id),
            |_| None,
        ))
    }

    fn delete_by_key<'a, 'b, 'c>(&'a self, key: &'b SessionKey) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.delete_by_key(key);
        }
        let deleted = self.inner.delete_by_key(key);
        Box::pin(self.observe(Operation::Delete, || Some(*key), deleted, |_| None))
    }

    fn change_id<'a, 'b, 'c>(&'a self, session: &'b mut Session) -> StoreCall<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.change_id(session);
        }
        let key = session.key();
        let changed = self.inner.change_id(session);
        Box::pin(self.observe(Operation::ChangeId, move || Some(key), changed, |_| None))
    }

    fn find_by_principal<'a, 'b, 'c>(
        &'a self,
        principal: &'b str,
    ) -> StoreCall<'c, Vec<SessionInfo>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.find_by_principal(principal);
        }
        let found = self.inner.find_by_principal(principal);
        Box::pin(self.observe(Operation::FindByPrincipal, || None, found, |_| None))
    }

    fn delete_by_principal<'a, 'b, 'c>(&'a self, principal: &'b str) -> StoreCall<'c, u64>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.unobserved() {
            return self.inner.delete_by_principal(principal);
        }
        let deleted = self.inner.delete_by_principal(principal);
        Box::pin(self.observe(Operation::DeleteByPrincipal, || None, deleted, |_| None))
    }

    fn import<'a, 'b, 'c, 'd>(
        &'a self,
        id: &'b SessionId,
        record: &'c SessionRecord,
    ) -> StoreCall<'d, bool>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        if self.unobserved() {
            return self.inner.import(id, record);
        }
        let imported = self.inner.import(id, record);
        let sizes = |_: &Result<bool>| Some((record.attributes.len(), record.attributes_size()));
        Box::pin(self.observe(Operation::Import, || Some(id.key()), imported, sizes))
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        self.inner.subscribe()
    }
}
