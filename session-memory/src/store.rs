//! The in-memory store.
//!
//! # Expiry strategy
//!
//! Each session is one moka entry holding its encoded [`SessionRecord`] and its deadline.
//! A per-entry [`Expiry`] sets moka's expiration to that deadline on every create, save and
//! touch, so moka stops returning the entry exactly when the contract says it is gone, and a
//! background sweep (every [`Config::sweep_interval`]) removes it, which fires the eviction
//! listener: that listener emits `Expired` (or `Evicted` when capacity forced it out) and drops
//! the key from the principal index. Reads still compare the deadline themselves, so the
//! contract never depends on when moka gets round to it.
//!
//! Every write goes through moka's per-key `and_compute_with`, which serialises writers of one
//! session: a save decodes the latest record, merges its delta and writes it back, exactly what a
//! remote store does in a script or transaction, so concurrent requests merge per attribute and
//! optimistic saves see conflicts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::Expiry;
use session_core::time::{duration_millis, now_millis};
use session_core::{
    async_trait, check_principal_query, report_undecodable, Capabilities, Error, EventBus,
    EventSubscription, Result, Session, SessionEvent, SessionId, SessionInfo, SessionKey,
    SessionRecord, SessionRepository, SessionSettings,
};

use crate::config::Config;

/// Weight of an entry beyond its bytes: key, metadata and moka's own bookkeeping.
const ENTRY_OVERHEAD: usize = 128;

/// One stored session. Its mutex is the serialisation point of everything that changes the
/// session: a save or touch changes the record in place under it, then inserts the same entry
/// again so that moka picks up the new deadline and weight; a delete marks it removed under
/// it. Readers copy the record out under the same short lock.
#[derive(Debug)]
struct Entry(Mutex<State>);

#[derive(Debug)]
struct State {
    content: Content,
    deadline_ms: u64,
    /// Set by a delete under this lock: a writer that got the entry before the delete sees it
    /// and fails with `NotFound` instead of putting the session back.
    removed: bool,
    /// Copy of the record's principal, so the eviction listener can unindex without decoding.
    principal: Option<Arc<str>>,
}

/// A stored session is normally kept decoded: its attribute names and values are
/// reference-counted, so handing out a copy moves no attribute bytes, and the store skips the
/// encode/decode a remote store cannot avoid. Bytes written by [`MemoryStore::write_raw`]
/// are kept as they are and decoded on first use, like any store reading its server's bytes.
#[derive(Debug)]
enum Content {
    Record(SessionRecord),
    Encoded(Vec<u8>),
}

impl Entry {
    fn from_record(record: SessionRecord) -> Arc<Self> {
        Arc::new(Entry(Mutex::new(State {
            deadline_ms: record.deadline_ms(),
            principal: record.principal.as_deref().map(Arc::from),
            content: Content::Record(record),
            removed: false,
        })))
    }

    fn encoded(bytes: Vec<u8>, deadline_ms: u64) -> Arc<Self> {
        Arc::new(Entry(Mutex::new(State {
            content: Content::Encoded(bytes),
            deadline_ms,
            principal: None,
            removed: false,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deadline_ms(&self) -> u64 {
        self.state().deadline_ms
    }

    fn principal(&self) -> Option<Arc<str>> {
        self.state().principal.clone()
    }

    /// Bytes counted against the store's capacity.
    fn weight(&self) -> usize {
        ENTRY_OVERHEAD
            + match &self.state().content {
                Content::Record(record) => record.attributes_size(),
                Content::Encoded(bytes) => bytes.len(),
            }
    }

    /// A copy of the live record, or `None` if expired or undecodable (the latter reported).
    fn live_record(&self, key: &SessionKey, now_ms: u64) -> Option<SessionRecord> {
        self.state()
            .live_record_mut(key, now_ms)
            .map(|record| record.clone())
    }
}

impl State {
    /// The live record, decoding raw bytes on first use; `None` if expired or undecodable.
    fn live_record_mut(&mut self, key: &SessionKey, now_ms: u64) -> Option<&mut SessionRecord> {
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
struct DeadlineExpiry;

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

/// Principal → keys of its sessions. Updated under the session's per-key compute lock, so it
/// follows the order of the writes; a lookup still checks every key against the cache.
#[derive(Debug, Default)]
struct PrincipalIndex(Mutex<HashMap<Arc<str>, HashSet<SessionKey>>>);

impl PrincipalIndex {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Arc<str>, HashSet<SessionKey>>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn add(&self, principal: &Arc<str>, key: SessionKey) {
        self.with(|map| map.entry(Arc::clone(principal)).or_default().insert(key));
    }

    fn remove(&self, principal: &str, key: &SessionKey) {
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
    fn update(&self, old: Option<&Arc<str>>, new: Option<&Arc<str>>, key: SessionKey) {
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

    fn keys(&self, principal: &str) -> Vec<SessionKey> {
        self.with(|map| {
            map.get(principal)
                .map(|keys| keys.iter().copied().collect())
                .unwrap_or_default()
        })
    }
}

#[derive(Debug)]
struct Shared {
    cache: Cache<SessionKey, Arc<Entry>>,
    index: Arc<PrincipalIndex>,
    events: EventBus,
}

/// Sessions in this process's memory, bounded in bytes, with per-session expiry.
///
/// Cloning, or [`MemoryStore::with_settings`], gives another handle on the same data: use one
/// per simulated service instance. Sessions do not survive the process and are not shared with
/// other processes; use a remote store for that.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    settings: Arc<SessionSettings>,
}

impl MemoryStore {
    /// A store with default [`Config`] and [`SessionSettings`].
    pub fn new() -> Self {
        Self::open(Config::default(), SessionSettings::default())
    }

    /// A store with this configuration and these session settings.
    ///
    /// Called inside a Tokio runtime it also starts the expiry sweep (a task that ends when the
    /// last handle is dropped); outside one, expired sessions are still invisible and are
    /// removed as moka's own maintenance reaches them.
    pub fn open(config: Config, settings: SessionSettings) -> Self {
        let index = Arc::new(PrincipalIndex::default());
        let events = EventBus::new(config.event_capacity);
        let listener_index = Arc::clone(&index);
        let listener_events = events.clone();
        let cache = Cache::builder()
            .max_capacity(config.capacity_bytes)
            .weigher(|_: &SessionKey, entry: &Arc<Entry>| {
                u32::try_from(entry.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(DeadlineExpiry)
            .eviction_listener(move |key: Arc<SessionKey>, entry: Arc<Entry>, cause| {
                let event = match cause {
                    RemovalCause::Expired => SessionEvent::Expired(*key),
                    RemovalCause::Size => SessionEvent::Evicted(*key),
                    // Explicit removals and replacements are handled by the operation itself.
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                let mut state = entry.state();
                // A save that extended the session just as moka expired it inserts it again.
                let revived = cause == RemovalCause::Expired && state.deadline_ms > now_millis();
                if state.removed || revived {
                    return;
                }
                state.removed = true;
                if let Some(principal) = &state.principal {
                    listener_index.remove(principal, &key);
                }
                drop(state);
                listener_events.publish(event);
            })
            .build();
        let shared = Arc::new(Shared {
            cache,
            index,
            events,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&shared), config.sweep_interval));
        }
        MemoryStore {
            shared,
            settings: Arc::new(settings),
        }
    }

    /// Another handle on the same data with other session settings.
    pub fn with_settings(&self, settings: SessionSettings) -> Self {
        MemoryStore {
            shared: Arc::clone(&self.shared),
            settings: Arc::new(settings),
        }
    }

    /// Stores `bytes` as the record of `key` without any check, expiring at `deadline`.
    ///
    /// Low-level access for tooling and for the conformance suite's corrupt-data cases: the
    /// bytes need not be a valid record, and readers must cope.
    pub async fn write_raw(&self, key: SessionKey, bytes: Vec<u8>, deadline: SystemTime) {
        let deadline_ms = deadline
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, duration_millis);
        let entry = Entry::encoded(bytes, deadline_ms);
        self.shared
            .cache
            .entry(key)
            .and_compute_with(|_| async move { Op::Put(entry) })
            .await;
    }

    /// Runs moka's pending maintenance now (expiry sweep, eviction listener).
    pub async fn run_pending_tasks(&self) {
        self.shared.cache.run_pending_tasks().await;
    }

    /// Inserts `entry` under `id`, or under fresh ids while the key is taken; returns the id used.
    async fn insert_under_free_id(&self, id: SessionId, entry: Arc<Entry>) -> Result<SessionId> {
        session_core::insert_under_free_id(id, |key| {
            let entry = Arc::clone(&entry);
            async move { Ok(self.insert_new(key, entry).await) }
        })
        .await
    }

    /// Stores `entry` under `key` unless the key is taken. Returns `false` on collision.
    async fn insert_new(&self, key: SessionKey, entry: Arc<Entry>) -> bool {
        let index = &self.shared.index;
        let mut inserted = false;
        self.shared
            .cache
            .entry(key)
            .and_compute_with(|existing| {
                let op = match existing {
                    Some(_) => Op::Nop,
                    None => {
                        if let Some(principal) = entry.principal() {
                            index.add(&principal, key);
                        }
                        inserted = true;
                        Op::Put(entry)
                    }
                };
                std::future::ready(op)
            })
            .await;
        inserted
    }

    /// Atomically changes the live record of `key` with `change`; `NotFound` if absent.
    /// `change` must leave the record as it was when it fails.
    async fn update<T>(
        &self,
        key: SessionKey,
        change: impl FnOnce(&mut SessionRecord, u64) -> Result<T>,
    ) -> Result<T> {
        let entry = self.shared.cache.get(&key).await.ok_or(Error::NotFound)?;
        let value = {
            let mut state = entry.state();
            let now = now_millis();
            let record = state.live_record_mut(&key, now).ok_or(Error::NotFound)?;
            let value = change(record, now)?;
            let deadline_ms = record.deadline_ms();
            let principal = record.principal.as_deref().map(Arc::<str>::from);
            self.shared
                .index
                .update(state.principal.as_ref(), principal.as_ref(), key);
            state.deadline_ms = deadline_ms;
            state.principal = principal;
            value
        };
        // The same entry again: moka re-reads its deadline and weight.
        self.shared.cache.insert(key, Arc::clone(&entry)).await;
        if entry.state().removed {
            // Deleted between our change and the insert: do not leave it in the cache.
            self.shared.cache.invalidate(&key).await;
        }
        Ok(value)
    }

    /// Removes `key`; returns the entry if this call removed it.
    async fn remove(&self, key: SessionKey) -> Option<Arc<Entry>> {
        let index = &self.shared.index;
        let mut removed = None;
        self.shared
            .cache
            .entry(key)
            .and_compute_with(|existing| {
                let op = match existing {
                    Some(entry) => {
                        let entry = entry.into_value();
                        let mut state = entry.state();
                        if !state.removed {
                            state.removed = true;
                            if let Some(principal) = &state.principal {
                                index.remove(principal, &key);
                            }
                            drop(state);
                            removed = Some(entry);
                        }
                        Op::Remove
                    }
                    None => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        removed
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs moka's maintenance periodically so that expired sessions are removed and reported even
/// when the store is idle. Ends when the store is dropped.
async fn sweep(shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.cache.run_pending_tasks().await;
    }
}

#[async_trait]
impl SessionRepository for MemoryStore {
    fn settings(&self) -> &Arc<SessionSettings> {
        &self.settings
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_principal_index(true)
            .with_lifecycle_events(true)
            .with_expiry_events(true)
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let record = session.record_for_create(now)?;
        let version = record.version;
        let id = self
            .insert_under_free_id(session.id().clone(), Entry::from_record(record))
            .await?;
        self.shared.events.publish(SessionEvent::Created(id.key()));
        session.assign_id(id);
        session.mark_persisted(version, now);
        Ok(())
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        let key = id.key();
        let Some(entry) = self.shared.cache.get(&key).await else {
            return Ok(None);
        };
        Ok(entry
            .live_record(&key, now_millis())
            .map(|record| Session::from_record(id.clone(), record, Arc::clone(&self.settings))))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let now = now_millis();
        let delta = session.delta(now)?;
        let limits = self.settings.limits;
        let version = self
            .update(session.key(), |record, now| {
                record.apply(&delta, now, &limits)?;
                Ok(record.version)
            })
            .await?;
        session.mark_persisted(version, now);
        Ok(())
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.update(id.key(), |record, now| record.touch(now)).await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        if self.remove(*key).await.is_some() {
            self.shared.events.publish(SessionEvent::Deleted(*key));
        }
        Ok(())
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        if session.is_new() {
            session.assign_id(SessionId::generate());
            return Ok(());
        }
        let old_key = session.key();
        let copied = self
            .shared
            .cache
            .get(&old_key)
            .await
            .and_then(|entry| entry.live_record(&old_key, now_millis()))
            .ok_or(Error::NotFound)?;
        let copied_version = copied.version;
        // New key first, then remove the old one: the session is never absent in between.
        let new_id = self
            .insert_under_free_id(SessionId::generate(), Entry::from_record(copied))
            .await?;
        let new_key = new_id.key();
        match self.remove(old_key).await {
            Some(latest) => {
                // A save that landed between the copy and the removal is carried over.
                if let Some(current) = latest.live_record(&old_key, now_millis()) {
                    if current.version != copied_version {
                        self.update(new_key, |record, _| {
                            *record = current;
                            Ok(())
                        })
                        .await?;
                    }
                }
            }
            // Deleted meanwhile: the rotation must not resurrect it.
            None => {
                self.remove(new_key).await;
                return Err(Error::NotFound);
            }
        }
        self.shared.events.publish(SessionEvent::IdChanged {
            old: old_key,
            new: new_key,
        });
        session.assign_id(new_id);
        Ok(())
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        check_principal_query(principal, &self.settings)?;
        let now = now_millis();
        let mut found = Vec::new();
        for key in self.shared.index.keys(principal) {
            let record = match self.shared.cache.get(&key).await {
                Some(entry) => entry.live_record(&key, now),
                None => None,
            };
            match record {
                Some(record) if record.principal.as_deref() == Some(principal) => {
                    found.extend(record.info(key));
                }
                // Moved to another principal under the compute lock just now: not ours.
                Some(_) => {}
                // Gone or expired: prune, so the index cannot leak.
                None => self.shared.index.remove(principal, &key),
            }
        }
        found.sort_by_key(|info| info.created_at);
        Ok(found)
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        let mut deleted = 0;
        for info in self.find_by_principal(principal).await? {
            if self.remove(info.key).await.is_some() {
                self.shared.events.publish(SessionEvent::Deleted(info.key));
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        Ok(self.shared.events.subscribe())
    }
}
