//! The methods of [`Session`] only stores call, behind [`SessionInternals`].

use std::sync::{Arc, PoisonError};

use bytes::Bytes;

use super::Session;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::record::{SessionDelta, SessionRecord};
use crate::settings::{Concurrency, SaveMode, SessionSettings};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Session {}
}

/// The methods of [`Session`] that only stores call: load from a record, the record to
/// create, the delta to save, mark stored, give another id, and the times in epoch ms.
/// Re-exported in [`raw`](crate::raw), for store authors; an application that imports only the
/// crate root cannot call them. Sealed: implemented by `Session` only.
pub trait SessionInternals: sealed::Sealed + Sized {
    /// A stored session as loaded by `find`: no pending changes.
    fn from_record(id: SessionId, record: SessionRecord, settings: Arc<SessionSettings>) -> Self;

    /// For stores: the full record to insert on `create`, with creation and access time set to
    /// `now_ms`. [`Error::InvalidInput`] if the session was already created.
    fn record_for_create(&mut self, now_ms: u64) -> Result<SessionRecord>;

    /// For stores: the full record this copy would store if nobody else had written since it
    /// was loaded — its own metadata and attributes, accessed at `accessed_at_ms`, with the
    /// loaded version. A store may write it instead of merging a delta only under a guard that
    /// the stored version is still [`Session::version`] (otherwise it must merge
    /// [`SessionInternals::delta`] into the latest record). [`Error::NotFound`] if never created.
    ///
    /// `Ok(None)` once a save of this copy merged into a record that others had saved since
    /// (see [`SessionInternals::mark_persisted`]): the stored record then holds their changes
    /// and this copy does not, so writing the copy — even under the version guard, which the
    /// merged version passes — would undo them. Its saves merge from then on, until the
    /// session is loaded again.
    ///
    /// The snapshot's access time is already the new one, so its deadline is the *new*
    /// deadline: check that the session is still live on the loaded copy
    /// ([`SessionInternals::deadline_ms`], before applying timeout changes), never on the
    /// snapshot.
    fn snapshot(&self, accessed_at_ms: u64) -> Result<Option<SessionRecord>>;

    /// For stores: what a save at `now_ms` must write, following the [`SaveMode`] and
    /// [`Concurrency`] of the settings. [`Error::NotFound`] if the session was never created.
    fn delta(&self, now_ms: u64) -> Result<SessionDelta<'_>>;

    /// For stores: whether this copy changed its idle timeout or absolute lifetime since it was
    /// loaded or saved, which a [`SessionInternals::delta`] would carry. Such a change moves the
    /// deadline a merge checks liveness against; a store that writes a
    /// [`SessionInternals::snapshot`] without merging asks this instead of building the delta.
    fn timeouts_changed(&self) -> bool;

    /// For stores: whether this copy changed its principal since it was loaded or saved, which
    /// a [`SessionInternals::delta`] would carry (cheaper to ask, like
    /// [`SessionInternals::timeouts_changed`]).
    fn principal_changed(&self) -> bool;

    /// For stores: the session is now stored with `version`, last accessed at `accessed_at_ms`;
    /// pending changes are cleared.
    ///
    /// Every save increments the stored version by one, so a `version` more than one past the
    /// copy's means that others saved in between and this save merged into their record: the
    /// copy lacks their changes, and [`SessionInternals::snapshot`] refuses it from then on.
    /// Core draws that conclusion here so that no store has to remember it.
    fn mark_persisted(&mut self, version: u64, accessed_at_ms: u64);

    /// For stores: gives this session another id once it is stored under it (create
    /// collision, `change_id`). Stores assign only after success, so that a call that failed
    /// with a transient error can be retried with the session as it was. Pending changes stay
    /// pending.
    fn assign_id(&mut self, id: SessionId);

    /// For stores: a token the store attached to this copy when it loaded it (a
    /// compare-and-swap token, an etag), as `(store instance, token)`, so that its save can
    /// write under that token without reading again. Cleared by
    /// [`SessionInternals::mark_persisted`] and [`SessionInternals::assign_id`]: it stands for
    /// the copy as loaded. A store must tag it with something unique to itself (a random
    /// instance number) and ignore tokens another instance attached.
    fn load_token(&self) -> Option<(u64, u64)>;

    /// For stores: attaches [`SessionInternals::load_token`].
    fn set_load_token(&mut self, store: u64, token: u64);

    /// For stores whose compare-and-set compares whole values (Valkey's `SET … IFEQ`): the
    /// stored value this copy was loaded from, as `(store instance, bytes)`, attached by the
    /// store, so that its save can write under the condition that the value is still that one
    /// without reading it again. Cleared like [`SessionInternals::load_token`]; the same rule
    /// holds: tag it with something unique to the store, ignore what another attached.
    fn load_value(&self) -> Option<(u64, &Bytes)>;

    /// For stores: attaches [`SessionInternals::load_value`]. Holding it costs a reference
    /// count when the bytes are shared with the loaded attributes.
    fn set_load_value(&mut self, store: u64, value: Bytes);

    /// Epoch ms of [`Session::created_at`].
    fn created_at_ms(&self) -> u64;

    /// Epoch ms of [`Session::last_accessed_at`]: for a loaded session, the stored access time
    /// it was loaded with, which stores can compare to detect touches since the load.
    fn last_accessed_at_ms(&self) -> u64;

    /// Epoch ms of [`Session::expires_at`].
    fn deadline_ms(&self) -> u64;
}

impl SessionInternals for Session {
    fn from_record(id: SessionId, record: SessionRecord, settings: Arc<SessionSettings>) -> Self {
        Self::from_parts(id, record, settings, true)
    }

    fn record_for_create(&mut self, now_ms: u64) -> Result<SessionRecord> {
        if self.persisted {
            return Err(Error::InvalidInput(
                "session was already created; use save".into(),
            ));
        }
        self.created_at_ms = now_ms;
        self.last_accessed_at_ms = now_ms;
        Ok(SessionRecord {
            created_at_ms: now_ms,
            last_accessed_at_ms: now_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            absolute_lifetime_ms: self.absolute_lifetime_ms,
            principal: self.principal.clone(),
            version: self.version,
            attributes: self.attributes.clone(),
        })
    }

    fn snapshot(&self, accessed_at_ms: u64) -> Result<Option<SessionRecord>> {
        if !self.persisted {
            return Err(Error::NotFound);
        }
        if self.behind_store {
            return Ok(None);
        }
        Ok(Some(SessionRecord {
            created_at_ms: self.created_at_ms,
            last_accessed_at_ms: self.last_accessed_at_ms.max(accessed_at_ms),
            idle_timeout_ms: self.idle_timeout_ms,
            absolute_lifetime_ms: self.absolute_lifetime_ms,
            principal: self.principal.clone(),
            version: self.version,
            attributes: self.attributes.clone(),
        }))
    }

    fn delta(&self, now_ms: u64) -> Result<SessionDelta<'_>> {
        if !self.persisted {
            return Err(Error::NotFound);
        }
        let attributes = &self.attributes;
        let pick = |name: &str| attributes.get_shared(name);
        let upserts: Vec<(&str, Bytes)> = match self.settings.save_mode {
            SaveMode::Always => self.attributes.iter_shared().collect(),
            // Walk the (few) changed names, not every attribute of the session.
            SaveMode::OnSet => self
                .changed
                .iter()
                .map(String::as_str)
                .filter_map(pick)
                .collect(),
            SaveMode::OnGet => self
                .changed
                .union(&self.read_names())
                .map(String::as_str)
                .filter_map(pick)
                .collect(),
        };
        Ok(SessionDelta {
            upserts,
            removals: self.removed.iter().map(String::as_str).collect(),
            principal: self.principal_changed.then_some(self.principal.as_deref()),
            idle_timeout_ms: self.idle_timeout_changed.then_some(self.idle_timeout_ms),
            absolute_lifetime_ms: self
                .absolute_lifetime_changed
                .then_some(self.absolute_lifetime_ms),
            accessed_at_ms: now_ms,
            expected_version: (self.settings.concurrency == Concurrency::Optimistic)
                .then_some(self.version),
        })
    }

    fn timeouts_changed(&self) -> bool {
        self.idle_timeout_changed || self.absolute_lifetime_changed
    }

    fn principal_changed(&self) -> bool {
        self.principal_changed
    }

    fn mark_persisted(&mut self, version: u64, accessed_at_ms: u64) {
        // A create stores the copy's own version; a save one more, unless others saved too.
        if self.persisted && version != self.version.wrapping_add(1) {
            self.behind_store = true;
        }
        self.persisted = true;
        self.load_token = None;
        self.load_value = None;
        self.version = version;
        self.last_accessed_at_ms = self.last_accessed_at_ms.max(accessed_at_ms);
        self.changed.clear();
        self.removed.clear();
        self.read
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.principal_changed = false;
        self.idle_timeout_changed = false;
        self.absolute_lifetime_changed = false;
    }

    fn assign_id(&mut self, id: SessionId) {
        self.key = id.key();
        self.id = id;
        self.load_token = None;
        self.load_value = None;
    }

    fn load_token(&self) -> Option<(u64, u64)> {
        self.load_token
    }

    fn set_load_token(&mut self, store: u64, token: u64) {
        self.load_token = Some((store, token));
    }

    fn load_value(&self) -> Option<(u64, &Bytes)> {
        self.load_value
            .as_ref()
            .map(|(store, value)| (*store, value))
    }

    fn set_load_value(&mut self, store: u64, value: Bytes) {
        self.load_value = Some((store, value));
    }

    fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    fn last_accessed_at_ms(&self) -> u64 {
        self.last_accessed_at_ms
    }

    fn deadline_ms(&self) -> u64 {
        self.deadline()
    }
}
