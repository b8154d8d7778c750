//! The near cache: decoded copies of the sessions this instance read or wrote, revalidated
//! against the server's metadata field on every read (see `RedisStore::load`).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use session_core::raw::SessionRecord;
use session_core::{Bytes, SessionKey};

use crate::meta::{Meta, INLINE_TOKEN};
use crate::store::RedisStore;

/// Decoded records this instance read or wrote, by session key, and the admission filter in
/// front of them. An entry is only a candidate: every read checks it against the server's
/// metadata field (see [`RedisStore::load`]).
///
/// quick_cache rather than moka: a lookup here is on every read, and moka's (a lock-free table
/// plus a read log replayed into its LRU lists) cost a fifth of a cached read's client time;
/// quick_cache's is a shard read lock and a reference bit.
///
/// **Admission.** A session enters the cache on its second read (or create) within
/// a short memory of recent keys, not on its first. When the sessions in use outgrow the
/// cache, admitting every one made each read and save insert a copy and evict another (the
/// clone, the insert and the late free of a cold record): with 20,000 large sessions and the
/// default 32 MiB, the cache made cycles about half as fast as no cache. The memory is a
/// direct-mapped table of key fingerprints with one slot per entry the cache is sized for: a
/// key is remembered until another key lands in its slot, so a key read again soon (the same
/// user's next request) is admitted, and a stream of keys that cannot fit is mostly not. Saves
/// do not admit (each request's save follows its own read), but they refresh an entry that is
/// cached, as reads do.
///
/// The table is sized for entries of a typical weight; once the cache is full, only as many of
/// its slots are used as entries of the cached ones' average weight fit (see
/// [`NearCache::fit_memory`]). With 20,000 large sessions (20 KB each) the full table
/// admitted about three reads in ten into a cache that held one session in twelve, and the
/// churn made the cache slower than none; a memory as long as the cache is deep admits a key
/// only if it comes back before the cache could have kept it anyway.
pub(crate) struct NearCache {
    entries: quick_cache::sync::Cache<SessionKey, Arc<Cached>, CachedWeight>,
    /// Recently sighted keys (see above): a 32-bit fingerprint per slot, 0 = empty.
    seen: Box<[AtomicU32]>,
    /// The slots of `seen` in use, minus one (a power of two minus one).
    seen_mask: AtomicUsize,
    /// Admissions since the memory was last fitted to the cache.
    admitted: AtomicU32,
}

impl NearCache {
    /// A near cache of `bytes`, sized for entries of a typical weight.
    pub(crate) fn new(bytes: u64) -> Self {
        let entries = usize::try_from(bytes / TYPICAL_ENTRY_BYTES)
            .unwrap_or(usize::MAX)
            .max(16);
        let seen: Box<[AtomicU32]> = (0..entries.next_power_of_two())
            .map(|_| AtomicU32::new(0))
            .collect();
        NearCache {
            entries: quick_cache::sync::Cache::with_weighter(entries, bytes, CachedWeight),
            seen_mask: AtomicUsize::new(seen.len() - 1),
            seen,
            admitted: AtomicU32::new(0),
        }
    }

    pub(crate) fn get(&self, key: &SessionKey) -> Option<Arc<Cached>> {
        self.entries.get(key)
    }

    pub(crate) fn remove(&self, key: &SessionKey) {
        self.entries.remove(key);
    }

    /// Keeps `cached` for `key` if the key was sighted recently (and notes this sighting).
    /// Offered are keys just found absent from the cache (a read that missed, a create), so
    /// the cache is not asked again: where sessions outnumber its room, that second lookup
    /// was a third of what the cache cost a read it could not help.
    fn offer(&self, key: &SessionKey, cached: impl FnOnce() -> Cached) {
        if self.sighted_before(key) {
            self.entries.insert(*key, Arc::new(cached()));
            // Summing the shards' counts takes each shard's lock: not on every insert.
            if self
                .admitted
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(REFIT_EVERY)
            {
                self.fit_memory();
            }
        }
    }

    /// Fits the sighting memory to the number of entries the cache holds: all the table
    /// while the cache has room, else one slot per entry of the cached ones' average weight
    /// that fits (rounded up to a power of two).
    fn fit_memory(&self) {
        let (count, weight, capacity) = (
            self.entries.len() as u64,
            self.entries.weight(),
            self.entries.capacity(),
        );
        let slots = if count == 0 || weight < capacity - capacity / 8 {
            self.seen.len()
        } else {
            let fit = capacity / weight.div_ceil(count).max(1);
            // The table's length is a power of two: rounding up stays within it.
            usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .clamp(16, self.seen.len())
                .next_power_of_two()
        };
        self.seen_mask.store(slots - 1, Ordering::Relaxed);
    }

    /// Replaces the entry of `key` with `cached` if there is one (a save's result: saves do
    /// not admit, or the read that starts every request's cycle would make each save the
    /// second sighting).
    fn refresh(&self, key: &SessionKey, cached: impl FnOnce() -> Cached) {
        if self.entries.contains_key(key) {
            let _ = self.entries.replace(*key, Arc::new(cached()), false);
        }
    }

    /// Whether `key` was sighted since another key took its slot; notes it either way.
    fn sighted_before(&self, key: &SessionKey) -> bool {
        // A session key is a SHA-256: its bytes are uniform, so they index and tag directly.
        let bytes = key.as_bytes();
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let slot = usize::try_from(word(0)).unwrap_or(0) & self.seen_mask.load(Ordering::Relaxed);
        let tag = word(4) | 1;
        self.seen[slot].swap(tag, Ordering::Relaxed) == tag
    }
}

/// Weighs a near-cache entry by the bytes it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedWeight;

impl quick_cache::Weighter<SessionKey, Arc<Cached>> for CachedWeight {
    fn weight(&self, _: &SessionKey, cached: &Arc<Cached>) -> u64 {
        let principal = cached.record.principal.as_ref().map_or(0, String::len);
        128 + cached.meta.size + cached.beside + u64::try_from(principal).unwrap_or(u64::MAX)
    }
}

/// The smallest value of the string layout the near cache keeps a copy of. Below it, fetching
/// the header to revalidate a copy saves too few bytes over fetching the value to pay for the
/// copy: with 1,000 sessions of 1.1 KB, all cached, small cycles ran 0.94–0.98× as fast as
/// without the cache (the server spent ~2 µs more per cycle on `GETRANGE` than on `GET`), and
/// reads level; 20 KB sessions were read 2.5× as fast.
pub(crate) const STRING_MIN_BYTES: usize = 4096;

/// Admissions between two fittings of the sighting memory to the cache.
const REFIT_EVERY: u32 = 64;

/// Average entry weight assumed to size the near cache's table up front.
pub(crate) const TYPICAL_ENTRY_BYTES: u64 = 2048;

/// A near-cache entry: the record and its metadata field as stored; for a session of the
/// string layout, the stored value too (which the record's attributes share), whose header a
/// read compares with the server's and whose bytes a save compares with.
pub(crate) struct Cached {
    pub(crate) meta: Meta,
    pub(crate) record: SessionRecord,
    pub(crate) value: Option<Bytes>,
    /// Bytes the entry holds beside the record's: the value's, when the record's attributes
    /// are not read from it (a copy written by this store).
    pub(crate) beside: u64,
}

impl RedisStore {
    /// Offers a copy of `record`, stored now under `key` with `meta`, to the near cache (see
    /// [`NearCache`] for which copies it keeps).
    pub(crate) fn remember_as(&self, key: &SessionKey, meta: Meta, record: &SessionRecord) {
        if let Some(cache) = &self.inner.near_cache {
            cache.offer(key, || Cached {
                meta,
                record: record.clone(),
                value: None,
                beside: 0,
            });
        }
    }

    /// Replaces the near-cache copy of `key`, if there is one, by `record`, stored now with
    /// `meta` (see [`NearCache::refresh`]).
    pub(crate) fn refresh_as(&self, key: &SessionKey, meta: Meta, record: &SessionRecord) {
        if let Some(cache) = &self.inner.near_cache {
            cache.refresh(key, || Cached {
                meta,
                record: record.clone(),
                value: None,
                beside: 0,
            });
        }
    }

    /// [`RedisStore::remember_as`] for a session of the string layout read as `value` (and
    /// decoded as `record`, which shares its buffer), if it is large enough to be worth it
    /// (see [`STRING_MIN_BYTES`]).
    pub(crate) fn remember_string(&self, key: &SessionKey, record: &SessionRecord, value: &Bytes) {
        if value.len() < STRING_MIN_BYTES {
            return;
        }
        if let Some(cache) = &self.inner.near_cache {
            cache.offer(key, || Cached {
                meta: Meta::of(record, INLINE_TOKEN),
                record: record.clone(),
                value: Some(value.clone()),
                beside: 0,
            });
        }
    }

    /// [`RedisStore::remember_string`] for a session just created as `value`.
    pub(crate) fn remember_created_string(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        value: &Bytes,
    ) {
        if value.len() < STRING_MIN_BYTES {
            return;
        }
        if let Some(cache) = &self.inner.near_cache {
            cache.offer(key, || cached_string(record, value));
        }
    }

    /// [`RedisStore::refresh_as`] for a session of the string layout stored as `value`.
    pub(crate) fn refresh_string(&self, key: &SessionKey, record: &SessionRecord, value: &Bytes) {
        if value.len() < STRING_MIN_BYTES {
            self.forget(key);
            return;
        }
        if let Some(cache) = &self.inner.near_cache {
            cache.refresh(key, || cached_string(record, value));
        }
    }

    /// Drops the near-cache entry of `key`.
    pub(crate) fn forget(&self, key: &SessionKey) {
        if let Some(cache) = &self.inner.near_cache {
            cache.remove(key);
        }
    }
}

/// A near-cache entry for `record`, written as `value`. The record's attributes keep the buffer
/// they were loaded from (plus the changes), so the entry holds that and `value`, and weighs
/// both: reading the attributes back from `value` instead cost a decode per save, which made
/// small cycles ~10% slower with the cache than without where every session fits it.
fn cached_string(record: &SessionRecord, value: &Bytes) -> Cached {
    Cached {
        meta: Meta::of(record, INLINE_TOKEN),
        record: record.clone(),
        value: Some(value.clone()),
        beside: u64::try_from(value.len()).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use session_core::raw::SessionRecord;
    use session_core::SessionId;

    use super::{Cached, NearCache};
    use crate::meta::Meta;

    fn cached(version: u64) -> Cached {
        let record = SessionRecord {
            created_at_ms: 1,
            last_accessed_at_ms: 2,
            idle_timeout_ms: 3,
            absolute_lifetime_ms: None,
            principal: None,
            version,
            attributes: Default::default(),
        };
        Cached {
            meta: Meta::of(&record, 0),
            record,
            value: None,
            beside: 0,
        }
    }

    #[test]
    fn a_key_is_admitted_on_its_second_sighting_and_then_refreshed() {
        let cache = NearCache::new(1 << 20);
        let key = SessionId::generate().key();
        cache.offer(&key, || cached(1));
        assert!(cache.get(&key).is_none(), "admitted on its first sighting");
        cache.offer(&key, || cached(2));
        assert_eq!(cache.get(&key).map(|c| c.record.version), Some(2));
        cache.offer(&key, || cached(3));
        assert_eq!(cache.get(&key).map(|c| c.record.version), Some(3));
        cache.refresh(&key, || cached(4));
        assert_eq!(cache.get(&key).map(|c| c.record.version), Some(4));
        cache.remove(&key);
        assert!(cache.get(&key).is_none());
        // A save's result only refreshes: it never admits, however often it is offered.
        let saved = SessionId::generate().key();
        cache.offer(&saved, || cached(1));
        cache.refresh(&saved, || cached(2));
        cache.refresh(&saved, || cached(3));
        assert!(cache.get(&saved).is_none(), "a save admitted");
    }

    /// Once full of entries heavier than the typical weight, the cache remembers sightings
    /// only for as many keys as it holds: a stream of distinct keys longer than that is not
    /// admitted, while a key seen again right away still is.
    #[test]
    fn a_full_cache_remembers_as_many_sightings_as_it_holds_entries() {
        let cache = NearCache::new(1 << 20);
        let all_slots = cache.seen.len();
        let heavy = || {
            let mut entry = cached(1);
            entry.meta.size = 16 * 1024;
            entry
        };
        for _ in 0..400 {
            let key = SessionId::generate().key();
            cache.offer(&key, heavy);
            cache.offer(&key, heavy);
        }
        cache.fit_memory();
        let slots = cache.seen_mask.load(std::sync::atomic::Ordering::Relaxed) + 1;
        // 1 MiB of 16 KiB entries: 63 fit (the weight adds 128 bytes), so 64 slots.
        assert_eq!(slots, 64, "of {all_slots}");
        let fresh = SessionId::generate().key();
        cache.offer(&fresh, heavy);
        cache.offer(&fresh, heavy);
        assert!(
            cache.get(&fresh).is_some(),
            "a key seen twice in a row not admitted"
        );
        // A cache with room again uses the whole table.
        let empty = NearCache::new(1 << 20);
        empty.fit_memory();
        assert_eq!(
            empty.seen_mask.load(std::sync::atomic::Ordering::Relaxed) + 1,
            all_slots
        );
    }
}
