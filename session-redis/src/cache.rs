//! The near cache: decoded copies of the sessions this instance read or wrote, revalidated
//! against the server's metadata field on every read (see `RedisStore::load`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use session_core::raw::SessionRecord;
use session_core::{Bytes, SessionKey};

use crate::cache_tier::Tier;
use crate::meta::{Meta, INLINE_TOKEN};
use crate::store::RedisStore;

/// Decoded records this instance read or wrote, by session key. An entry is only a candidate:
/// every read checks it against the server's metadata field (see [`RedisStore::load`]).
///
/// **It serves only where it pays.** A cache costs every read: a lookup, and copies kept in
/// memory, whose buffers the allocator then hands out cold. With 20,000 sessions of 20 KB
/// read at random, a twelfth of which fit the default 32 MiB, the cache found an entry for
/// 7.6% of reads, and reads ran 0.88–0.90× and cycles 0.94–0.96× as fast as without it; with
/// 1,000 such sessions, all cached, reads ran 2.5× as fast. Between the two, it pays from
/// about a fifth of reads served. So the cache measures what it would serve: a sixteenth of
/// the keys (by a byte of the key, which is uniform) use a tier of their own, a sixteenth of
/// the bytes, which is the whole cache in miniature (a uniform sample of the keys in
/// proportionate room serves the same share of their reads as the whole cache serves of all).
/// Every [`WINDOW`] lookups of that tier, the share that found an entry decides: at
/// [`SERVE_FROM`] or more the other keys use the main tier, below it they skip the cache
/// altogether, lookup and offer, as if there were none. The sample keeps measuring, so a load
/// the cache can serve turns it back on within a window (about 4,000 reads), and one it cannot
/// turns it off as fast. After [`CLEAR_AFTER`] windows in a row off, the main tier lets its
/// copies go: a cache that serves nothing holds nothing.
pub(crate) struct NearCache {
    /// The other fifteen sixteenths of the keys, and of the bytes.
    main: Tier,
    /// The sampled keys (see [`sampled`]).
    sample: Tier,
    /// Lookups of the sample in this window, and how many found an entry.
    sample_lookups: AtomicU32,
    sample_hits: AtomicU32,
    /// Whether the unsampled keys use the main tier.
    serving: AtomicBool,
    /// Windows in a row that turned the main tier off.
    windows_off: AtomicU32,
}

impl NearCache {
    /// A near cache of `bytes` in all.
    pub(crate) fn new(bytes: u64) -> Self {
        let sample = bytes / 16;
        NearCache {
            main: Tier::new(bytes - sample),
            sample: Tier::new(sample),
            sample_lookups: AtomicU32::new(0),
            sample_hits: AtomicU32::new(0),
            serving: AtomicBool::new(true),
            windows_off: AtomicU32::new(0),
        }
    }

    /// The tier of `key`, if the key uses the cache now. A key that does not is read from
    /// the server, which is always right, and leaves whatever entry it has as it is: reads
    /// check every entry with the server before they use it.
    fn tier(&self, key: &SessionKey) -> Option<&Tier> {
        if sampled(key) {
            Some(&self.sample)
        } else {
            self.serving.load(Ordering::Relaxed).then_some(&self.main)
        }
    }

    pub(crate) fn get(&self, key: &SessionKey) -> Option<Arc<Cached>> {
        if !sampled(key) {
            return self.tier(key)?.get(key);
        }
        let found = self.sample.get(key);
        if found.is_some() {
            self.sample_hits.fetch_add(1, Ordering::Relaxed);
        }
        if (self.sample_lookups.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(WINDOW) {
            self.end_window();
        }
        found
    }

    /// Turns the main tier on or off by what the window's lookups of the sample found.
    fn end_window(&self) {
        let hits = self.sample_hits.swap(0, Ordering::Relaxed);
        let serving = f64::from(hits) >= SERVE_FROM * f64::from(WINDOW);
        self.serving.store(serving, Ordering::Relaxed);
        if serving {
            self.windows_off.store(0, Ordering::Relaxed);
        } else if self.windows_off.fetch_add(1, Ordering::Relaxed) + 1 == CLEAR_AFTER {
            self.main.clear();
        }
    }

    pub(crate) fn remove(&self, key: &SessionKey) {
        if sampled(key) {
            self.sample.remove(key);
        } else {
            self.main.remove(key);
        }
    }

    /// Offers a copy to the tier of `key` (see [`Tier::offer`]).
    fn offer(&self, key: &SessionKey, cached: impl FnOnce() -> Cached) {
        if let Some(tier) = self.tier(key) {
            tier.offer(key, cached);
        }
    }

    /// Refreshes the entry of `key` in its tier (see [`Tier::refresh`]).
    fn refresh(&self, key: &SessionKey, cached: impl FnOnce() -> Cached) {
        if let Some(tier) = self.tier(key) {
            tier.refresh(key, cached);
        }
    }
}

/// Lookups of the sample per window.
const WINDOW: u32 = 256;

/// The share of the sample's lookups that must find an entry for the other keys to use the
/// cache (see [`NearCache`]).
const SERVE_FROM: f64 = 0.2;

/// Windows in a row with the main tier off after which it lets its copies go (about 64,000
/// reads).
const CLEAR_AFTER: u32 = 16;

/// Whether `key` is one of the sixteenth of keys that always use the cache, in a tier of
/// their own, and measure it. Any byte of a session key (a SHA-256) is uniform; the sighting
/// memory uses the first eight.
fn sampled(key: &SessionKey) -> bool {
    key.as_bytes()[31] & 15 == 0
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
    use std::sync::atomic::Ordering;

    use session_core::{SessionId, SessionKey};

    use super::{sampled, NearCache, CLEAR_AFTER, WINDOW};
    use crate::cache_tier::tests::heavy;

    fn keys(sampled_ones: bool) -> impl Iterator<Item = SessionKey> {
        std::iter::repeat_with(|| SessionId::generate().key())
            .filter(move |key| sampled(key) == sampled_ones)
    }

    /// A cache of 1 MiB holds about 60 entries of 16 KiB, 3 of them in the sample's tier:
    /// reading keys that never come back, the sample finds nothing, and after a window the
    /// other keys skip the cache; reading a few keys over and over, it finds them, and after
    /// a window the other keys use the cache again.
    #[test]
    fn the_other_keys_use_the_cache_only_while_the_sample_finds_entries() {
        let cache = NearCache::new(1 << 20);
        let other = keys(false).next().unwrap();
        cache.offer(&other, heavy);
        assert!(cache.get(&other).is_some(), "not served at first");
        for key in keys(true).take(WINDOW as usize) {
            assert!(cache.get(&key).is_none());
            cache.offer(&key, heavy);
        }
        assert!(!cache.serving.load(Ordering::Relaxed));
        assert!(
            cache.get(&other).is_none(),
            "served while the sample missed"
        );
        let unseen = keys(false).next().unwrap();
        cache.offer(&unseen, heavy);
        cache.offer(&unseen, heavy);
        assert!(
            cache.main.get(&unseen).is_none(),
            "admitted while not served"
        );

        let few: Vec<SessionKey> = keys(true).take(2).collect();
        for key in &few {
            cache.offer(key, heavy);
            cache.offer(key, heavy);
        }
        for key in few.iter().cycle().take(WINDOW as usize) {
            assert!(
                cache.get(key).is_some(),
                "a sampled key read again not kept"
            );
        }
        assert!(cache.serving.load(Ordering::Relaxed));
        assert!(
            cache.get(&other).is_some(),
            "the entry kept while not served is gone"
        );

        for key in keys(true).take((WINDOW * CLEAR_AFTER) as usize) {
            cache.get(&key);
        }
        assert!(!cache.serving.load(Ordering::Relaxed));
        assert!(
            cache.main.get(&other).is_none(),
            "a cache off for long still holds copies"
        );
    }

    #[test]
    fn a_key_is_in_the_sample_one_time_in_sixteen() {
        let count = std::iter::repeat_with(|| SessionId::generate().key())
            .take(16_000)
            .filter(sampled)
            .count();
        assert!((800..1_200).contains(&count), "{count} of 16,000");
    }
}
