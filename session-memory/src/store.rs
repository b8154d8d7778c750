//! The in-memory store.
//!
//! # Expiry strategy
//!
//! Each session is one moka entry holding the decoded [`SessionRecord`] (attribute names and
//! values reference-counted, so handing out a copy moves no attribute bytes) and its deadline.
//! A per-entry [`Expiry`] sets moka's expiration to that deadline on every create, save and
//! touch, so moka stops returning the entry exactly when the contract says it is gone, and a
//! background sweep (every [`Config::sweep_interval`]) removes it, which fires the eviction
//! listener: that listener emits `Expired` (or `Evicted` when capacity forced it out) and drops
//! the key from the principal index. Reads still compare the deadline themselves, so the
//! contract never depends on when moka gets round to it.
//!
//! Each entry has its own mutex, the serialisation point of everything that changes the
//! session: a save merges its delta into the record in place under it with
//! [`SessionRecord::apply`] (exactly what a remote store does in a script or transaction, so
//! concurrent requests merge per attribute and optimistic saves see conflicts), then inserts
//! the same entry again so that moka picks up the new deadline and weight. Creates and deletes
//! go through moka's per-key `and_compute_with`, so an insert never overwrites and a delete
//! marks the entry removed under its mutex, which a racing save then sees.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use session_core::raw::time::now_millis;
use session_core::raw::{
    delete_principal, list_principal, rotate_id, Creation, EventBus, Lookup, PrincipalIndexIo,
    Rotated, Rotation, SessionInternals, SessionRecord,
};
use session_core::{
    async_trait, Capabilities, Error, EventSubscription, Result, Session, SessionEvent, SessionId,
    SessionInfo, SessionKey, SessionRepository, SessionSettings,
};

use crate::config::Config;
use crate::entry::{DeadlineExpiry, Entry};
use crate::index::PrincipalIndex;

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

    /// Runs moka's pending maintenance now (expiry sweep, eviction listener), for tests.
    #[cfg(feature = "testing")]
    pub async fn run_pending_tasks(&self) {
        self.shared.cache.run_pending_tasks().await;
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

    /// One attempt of `change_id`: copies the live record of `old` to `new`, then removes `old`.
    async fn rotate(&self, old: SessionKey, new: SessionKey) -> Result<Rotation> {
        let Some(copied) = self.live_record(&old).await else {
            return Ok(Rotation::Gone);
        };
        let copied_version = copied.version;
        // New key first, then remove the old one: the session is never absent in between.
        if !self.insert_new(new, Entry::from_record(copied)).await {
            return Ok(Rotation::IdTaken);
        }
        let Some(latest) = self.remove(old).await else {
            // Deleted meanwhile: the rotation must not resurrect it.
            self.remove(new).await;
            return Ok(Rotation::Gone);
        };
        // A save that landed between the copy and the removal is carried over.
        if let Some(current) = latest.live_record(&old, now_millis()) {
            if current.version != copied_version {
                self.update(new, |record, _| {
                    *record = current;
                    Ok(())
                })
                .await?;
            }
        }
        Ok(Rotation::Moved)
    }

    async fn live_record(&self, key: &SessionKey) -> Option<SessionRecord> {
        let entry = self.shared.cache.get(key).await?;
        entry.live_record(key, now_millis())
    }
}

#[async_trait]
impl PrincipalIndexIo for MemoryStore {
    type Member = SessionKey;

    async fn members(&self, principal: &str) -> Result<Vec<SessionKey>> {
        Ok(self.shared.index.keys(principal))
    }

    fn member_key(&self, member: &SessionKey) -> Option<SessionKey> {
        Some(*member)
    }

    async fn lookup(&self, key: &SessionKey, now_ms: u64) -> Result<Lookup> {
        Ok(match self.shared.cache.get(key).await {
            Some(entry) => entry.lookup(key, now_ms),
            None => Lookup::Absent,
        })
    }

    async fn prune(&self, principal: &str, member: &SessionKey) -> Result<()> {
        self.shared.index.remove(principal, member);
        Ok(())
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
            .with_import(true)
    }

    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        record.check_importable(now_millis(), &self.settings.limits)?;
        Ok(self
            .insert_new(id.key(), Entry::from_record(record.clone()))
            .await)
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        let creation = Creation::begin(session)?;
        let id = creation
            .insert_under_free_id(|key| {
                let entry = Entry::from_record(creation.record().clone());
                async move { Ok(self.insert_new(key, entry).await) }
            })
            .await?;
        self.shared.events.publish(SessionEvent::Created(id.key()));
        creation.finish(session, id);
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
        let rotated = rotate_id(session, |old, new| self.rotate(old, new)).await?;
        if let Rotated::Moved { old, new } = rotated {
            self.shared
                .events
                .publish(SessionEvent::IdChanged { old, new });
        }
        Ok(())
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        list_principal(self, principal, &self.settings).await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        delete_principal(self, principal, &self.settings, |key| async move {
            let removed = self.remove(key).await.is_some();
            if removed {
                self.shared.events.publish(SessionEvent::Deleted(key));
            }
            Ok(removed)
        })
        .await
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        Ok(self.shared.events.subscribe())
    }
}

#[cfg(feature = "testing")]
#[async_trait]
impl session_core::testing::WriteRaw for MemoryStore {
    /// Stores `bytes` as the record of `key`, kept as they are and decoded on first use;
    /// moka expires the entry in a minute.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        let deadline_ms = now_millis() + 60_000;
        let entry = Entry::encoded(bytes.to_vec(), deadline_ms);
        self.shared
            .cache
            .entry(*key)
            .and_compute_with(|_| async move { Op::Put(entry) })
            .await;
        Ok(())
    }
}
