//! One part of the near cache: entries, and the admission filter in front of them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use session_core::SessionKey;

use crate::cache::{Cached, CachedWeight};

/// Admissions between two fittings of the sighting memory to the entries.
const REFIT_EVERY: u32 = 64;

/// Average entry weight assumed to size a tier's table up front.
pub(crate) const TYPICAL_ENTRY_BYTES: u64 = 2048;

/// Entries by session key, and their admission filter.
///
/// quick_cache rather than moka: a lookup here is on every read, and moka's (a lock-free table
/// plus a read log replayed into its LRU lists) cost a fifth of a cached read's client time;
/// quick_cache's is a shard read lock and a reference bit.
///
/// **Admission.** While the tier has room (less than seven eighths of its bytes in use), a
/// session enters it on its first read (or create). Once it is full, a session enters on its
/// second read within a short memory of recent keys, not on its first: admitting every one
/// made each read and save insert a copy and evict another (the clone, the insert and the late
/// free of a cold record); with 20,000 large sessions and the default 32 MiB, the cache made
/// cycles about half as fast as no cache. The memory is a direct-mapped table of key
/// fingerprints with one slot per entry the tier is sized for: a key is remembered until
/// another key lands in its slot, so a key read again soon (the same user's next request) is
/// admitted, and a stream of keys that cannot fit is mostly not. Saves do not admit (each
/// request's save follows its own read), but they refresh an entry that is cached, as reads do.
///
/// The table is sized for entries of a typical weight; once the tier is full, only as many of
/// its slots are used as entries of the cached ones' average weight fit (see
/// [`Tier::fit_memory`]). With 20,000 large sessions (20 KB each) the full table admitted
/// about three reads in ten into a cache that held one session in twelve; a memory as long as
/// the tier is deep admits a key only if it comes back before the tier could have kept it
/// anyway.
pub(crate) struct Tier {
    entries: quick_cache::sync::Cache<SessionKey, Arc<Cached>, CachedWeight>,
    /// Recently sighted keys (see above): a 32-bit fingerprint per slot, 0 = empty.
    pub(crate) seen: Box<[AtomicU32]>,
    /// The slots of `seen` in use, minus one (a power of two minus one).
    pub(crate) seen_mask: AtomicUsize,
    /// Admissions since the memory was last fitted to the entries.
    admitted: AtomicU32,
    /// Whether the tier had room when last fitted: then a first sighting admits.
    pub(crate) has_room: AtomicBool,
}

impl Tier {
    /// A tier of `bytes`, sized for entries of a typical weight.
    pub(crate) fn new(bytes: u64) -> Self {
        let entries = usize::try_from(bytes / TYPICAL_ENTRY_BYTES)
            .unwrap_or(usize::MAX)
            .max(16);
        let seen: Box<[AtomicU32]> = (0..entries.next_power_of_two())
            .map(|_| AtomicU32::new(0))
            .collect();
        Tier {
            entries: quick_cache::sync::Cache::with_weighter(entries, bytes.max(1), CachedWeight),
            seen_mask: AtomicUsize::new(seen.len() - 1),
            seen,
            admitted: AtomicU32::new(0),
            has_room: AtomicBool::new(true),
        }
    }

    pub(crate) fn get(&self, key: &SessionKey) -> Option<Arc<Cached>> {
        self.entries.get(key)
    }

    pub(crate) fn remove(&self, key: &SessionKey) {
        self.entries.remove(key);
    }

    /// Drops every entry; the tier has room again.
    pub(crate) fn clear(&self) {
        self.entries.clear();
        self.fit_memory();
    }

    /// Keeps `cached` for `key` if the tier has room or the key was sighted recently (and
    /// notes this sighting). Offered are keys just found absent (a read that missed, a
    /// create), so the tier is not asked again: where sessions outnumber its room, that second
    /// lookup was a third of what the cache cost a read it could not help.
    pub(crate) fn offer(&self, key: &SessionKey, cached: impl FnOnce() -> Cached) {
        // Both, not `||`: a sighting while the tier has room is noted for when it has none.
        if self.sighted_before(key) | self.has_room.load(Ordering::Relaxed) {
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

    /// Replaces the entry of `key` with `cached` if there is one (a save's result: saves do
    /// not admit, or the read that starts every request's cycle would make each save the
    /// second sighting).
    pub(crate) fn refresh(&self, key: &SessionKey, cached: impl FnOnce() -> Cached) {
        if self.entries.contains_key(key) {
            let _ = self.entries.replace(*key, Arc::new(cached()), false);
        }
    }

    /// Fits the sighting memory to the number of entries the tier holds: all the table while
    /// the tier has room, else one slot per entry of the cached ones' average weight that fits
    /// (rounded up to a power of two). Notes whether the tier has room.
    pub(crate) fn fit_memory(&self) {
        let (count, weight, capacity) = (
            self.entries.len() as u64,
            self.entries.weight(),
            self.entries.capacity(),
        );
        let has_room = count == 0 || weight < capacity - capacity / 8;
        self.has_room.store(has_room, Ordering::Relaxed);
        let slots = if has_room {
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

#[cfg(test)]
pub(crate) mod tests {
    use session_core::raw::SessionRecord;
    use session_core::SessionId;

    use super::Tier;
    use crate::cache::Cached;
    use crate::meta::Meta;

    pub(crate) fn cached(version: u64) -> Cached {
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

    pub(crate) fn heavy() -> Cached {
        let mut entry = cached(1);
        entry.meta.size = 16 * 1024;
        entry
    }

    /// A cache of 1 MiB filled with entries of 16 KiB, fitted.
    fn full_cache() -> Tier {
        let cache = Tier::new(1 << 20);
        for _ in 0..400 {
            cache.offer(&SessionId::generate().key(), heavy);
        }
        cache.fit_memory();
        cache
    }

    #[test]
    fn a_key_is_admitted_on_its_first_sighting_while_there_is_room_and_then_refreshed() {
        let cache = Tier::new(1 << 20);
        let key = SessionId::generate().key();
        cache.offer(&key, || cached(1));
        assert_eq!(cache.get(&key).map(|c| c.record.version), Some(1));
        cache.offer(&key, || cached(2));
        assert_eq!(cache.get(&key).map(|c| c.record.version), Some(2));
        cache.refresh(&key, || cached(3));
        assert_eq!(cache.get(&key).map(|c| c.record.version), Some(3));
        cache.remove(&key);
        assert!(cache.get(&key).is_none());
        // A save's result only refreshes: it never admits, however often it comes.
        let saved = SessionId::generate().key();
        cache.refresh(&saved, || cached(1));
        cache.refresh(&saved, || cached(2));
        assert!(cache.get(&saved).is_none(), "a save admitted");
    }

    #[test]
    fn a_full_cache_admits_a_key_on_its_second_sighting() {
        let cache = full_cache();
        assert!(!cache.has_room.load(std::sync::atomic::Ordering::Relaxed));
        let key = SessionId::generate().key();
        cache.offer(&key, heavy);
        assert!(cache.get(&key).is_none(), "admitted on its first sighting");
        cache.offer(&key, heavy);
        assert!(cache.get(&key).is_some(), "not admitted on its second");
        let saved = SessionId::generate().key();
        cache.offer(&saved, heavy);
        cache.refresh(&saved, heavy);
        assert!(cache.get(&saved).is_none(), "a save admitted");
    }

    /// Once full of entries heavier than the typical weight, the cache remembers sightings
    /// only for as many keys as it holds: a stream of distinct keys longer than that is not
    /// admitted, while a key seen again right away still is.
    #[test]
    fn a_full_cache_remembers_as_many_sightings_as_it_holds_entries() {
        let cache = full_cache();
        let all_slots = cache.seen.len();
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
        let empty = Tier::new(1 << 20);
        empty.fit_memory();
        assert_eq!(
            empty.seen_mask.load(std::sync::atomic::Ordering::Relaxed) + 1,
            all_slots
        );
        assert!(empty.has_room.load(std::sync::atomic::Ordering::Relaxed));
    }
}
