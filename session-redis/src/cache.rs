//! The near cache: decoded copies of the sessions this instance read or wrote, revalidated
//! against the server's metadata field on every read (see `RedisStore::load`).

use std::sync::Arc;

use session_core::raw::SessionRecord;
use session_core::SessionKey;

use crate::meta::Meta;
use crate::store::RedisStore;

/// Decoded records this instance read or wrote, by session key. An entry is only a candidate:
/// every read checks it against the server's metadata field (see [`RedisStore::load`]).
///
/// quick_cache rather than moka: a lookup here is on every read, and moka's (a lock-free table
/// plus a read log replayed into its LRU lists) cost a fifth of a cached read's client time;
/// quick_cache's is a shard read lock and a reference bit.
pub(crate) type NearCache = quick_cache::sync::Cache<SessionKey, Arc<Cached>, CachedWeight>;

/// Weighs a near-cache entry by the bytes it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedWeight;

impl quick_cache::Weighter<SessionKey, Arc<Cached>> for CachedWeight {
    fn weight(&self, _: &SessionKey, cached: &Arc<Cached>) -> u64 {
        let principal = cached.record.principal.as_ref().map_or(0, String::len);
        128 + cached.meta.size + u64::try_from(principal).unwrap_or(u64::MAX)
    }
}

/// Average entry weight assumed to size the near cache's table up front.
pub(crate) const TYPICAL_ENTRY_BYTES: u64 = 2048;

/// A near-cache entry: the record and its metadata field as stored.
pub(crate) struct Cached {
    pub(crate) meta: Meta,
    pub(crate) record: SessionRecord,
}

/// A near cache of `bytes`, sized for entries of a typical weight.
pub(crate) fn near_cache(bytes: u64) -> NearCache {
    let entries = usize::try_from(bytes / TYPICAL_ENTRY_BYTES)
        .unwrap_or(usize::MAX)
        .max(16);
    NearCache::with_weighter(entries, bytes, CachedWeight)
}

impl RedisStore {
    /// Puts a copy of `record`, stored now under `key` with `meta`, in the near cache.
    pub(crate) fn remember_as(&self, key: &SessionKey, meta: Meta, record: &SessionRecord) {
        if let Some(cache) = &self.inner.near_cache {
            let cached = Cached {
                meta,
                record: record.clone(),
            };
            cache.insert(*key, Arc::new(cached));
        }
    }

    /// Drops the near-cache entry of `key`.
    pub(crate) fn forget(&self, key: &SessionKey) {
        if let Some(cache) = &self.inner.near_cache {
            cache.remove(key);
        }
    }
}
