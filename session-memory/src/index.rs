//! The principal index: principal → keys of its sessions, in this process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use session_core::SessionKey;

/// Principal → keys of its sessions. Updated under the session's per-key compute lock, so it
/// follows the order of the writes; a lookup still checks every key against the cache.
#[derive(Debug, Default)]
pub(crate) struct PrincipalIndex(Mutex<HashMap<Arc<str>, HashSet<SessionKey>>>);

impl PrincipalIndex {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Arc<str>, HashSet<SessionKey>>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn add(&self, principal: &Arc<str>, key: SessionKey) {
        self.with(|map| map.entry(Arc::clone(principal)).or_default().insert(key));
    }

    pub(crate) fn remove(&self, principal: &str, key: &SessionKey) {
        self.with(|map| {
            if let Some(keys) = map.get_mut(principal) {
                keys.remove(key);
                if keys.is_empty() {
                    map.remove(principal);
                }
            }
        });
    }

    /// Moves `key` from `old` to `new` when the principal changed.
    pub(crate) fn update(&self, old: Option<&Arc<str>>, new: Option<&Arc<str>>, key: SessionKey) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.remove(old, &key);
        }
        if let Some(new) = new {
            self.add(new, key);
        }
    }

    pub(crate) fn keys(&self, principal: &str) -> Vec<SessionKey> {
        self.with(|map| {
            map.get(principal)
                .map(|keys| keys.iter().copied().collect())
                .unwrap_or_default()
        })
    }
}
