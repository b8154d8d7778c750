//! One stored session: the record behind a mutex, its deadline, and moka's expiry from it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry;
use session_core::raw::time::now_millis;
use session_core::raw::{report_undecodable, Lookup, SessionRecord};
use session_core::SessionKey;

/// Weight of an entry beyond its bytes: key, metadata and moka's own bookkeeping.
const ENTRY_OVERHEAD: usize = 128;

/// One stored session. Its mutex is the serialisation point of everything that changes the
/// session: a save or touch changes the record in place under it, then inserts the same entry
/// again so that moka picks up the new deadline and weight; a delete marks it removed under
/// it. Readers copy the record out under the same short lock.
#[derive(Debug)]
pub(crate) struct Entry(Mutex<State>);

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) content: Content,
    pub(crate) deadline_ms: u64,
    /// Set by a delete under this lock: a writer that got the entry before the delete sees it
    /// and fails with `NotFound` instead of putting the session back.
    pub(crate) removed: bool,
    /// Copy of the record's principal, so the eviction listener can unindex without decoding.
    pub(crate) principal: Option<Arc<str>>,
}

/// A stored session is normally kept decoded: its attribute names and values are
/// reference-counted, so handing out a copy moves no attribute bytes, and the store skips the
/// encode/decode a remote store cannot avoid. Bytes written by a raw write (feature `testing`)
/// are kept as they are and decoded on first use, like any store reading its server's bytes.
#[derive(Debug)]
pub(crate) enum Content {
    Record(SessionRecord),
    // Only raw writes (feature `testing`) put bytes here; the reading path stays compiled so
    // that it is the code the corrupt-data cases test.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Encoded(Vec<u8>),
}

impl Entry {
    pub(crate) fn from_record(record: SessionRecord) -> Arc<Self> {
        Arc::new(Entry(Mutex::new(State {
            deadline_ms: record.deadline_ms(),
            principal: record.principal.as_deref().map(Arc::from),
            content: Content::Record(record),
            removed: false,
        })))
    }

    #[cfg(feature = "testing")]
    pub(crate) fn encoded(bytes: Vec<u8>, deadline_ms: u64) -> Arc<Self> {
        Arc::new(Entry(Mutex::new(State {
            content: Content::Encoded(bytes),
            deadline_ms,
            principal: None,
            removed: false,
        })))
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn deadline_ms(&self) -> u64 {
        self.state().deadline_ms
    }

    pub(crate) fn principal(&self) -> Option<Arc<str>> {
        self.state().principal.clone()
    }

    /// Bytes counted against the store's capacity.
    pub(crate) fn weight(&self) -> usize {
        ENTRY_OVERHEAD
            + match &self.state().content {
                Content::Record(record) => record.attributes_size(),
                Content::Encoded(bytes) => bytes.len(),
            }
    }

    /// A copy of the live record, or `None` if expired or undecodable (the latter reported).
    pub(crate) fn live_record(&self, key: &SessionKey, now_ms: u64) -> Option<SessionRecord> {
        self.state()
            .live_record_mut(key, now_ms)
            .map(|record| record.clone())
    }
}

impl Entry {
    /// What this entry holds for the principal algorithms.
    pub(crate) fn lookup(&self, key: &SessionKey, now_ms: u64) -> Lookup {
        let mut state = self.state();
        if let Some(record) = state.live_record_mut(key, now_ms) {
            return Lookup::Live(record.clone());
        }
        // Bytes that stayed encoded after the decode attempt are undecodable.
        if !state.removed && matches!(state.content, Content::Encoded(_)) {
            Lookup::Undecodable
        } else {
            Lookup::Absent
        }
    }
}

impl State {
    /// The live record, decoding raw bytes on first use; `None` if expired or undecodable.
    pub(crate) fn live_record_mut(
        &mut self,
        key: &SessionKey,
        now_ms: u64,
    ) -> Option<&mut SessionRecord> {
        if self.removed {
            return None;
        }
        if let Content::Encoded(bytes) = &self.content {
            match SessionRecord::decode(bytes) {
                Ok(record) => self.content = Content::Record(record),
                Err(error) => {
                    report_undecodable(key, &error);
                    return None;
                }
            }
        }
        match &mut self.content {
            Content::Record(record) if record.is_live_at(now_ms) => Some(record),
            _ => None,
        }
    }
}

/// Sets each entry's moka expiration to the session's own deadline.
pub(crate) struct DeadlineExpiry;

impl Expiry<SessionKey, Arc<Entry>> for DeadlineExpiry {
    fn expire_after_create(
        &self,
        _: &SessionKey,
        entry: &Arc<Entry>,
        _: Instant,
    ) -> Option<Duration> {
        Some(until(entry.deadline_ms()))
    }

    fn expire_after_update(
        &self,
        _: &SessionKey,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(until(entry.deadline_ms()))
    }
}

fn until(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_millis()))
}
