//! [`MigratingFixture`]: the suite against a [`Migrating`] pair, so that a migration between two
//! stores is held to the same contract as each store.

use std::sync::Arc;

use async_trait::async_trait;
use session_core::raw::SessionRecord;
use session_core::testing::RawShape;
use session_core::{
    EventSubscription, Migrating, Result, Session, SessionId, SessionInfo, SessionKey,
    SessionRepository, SessionSettings,
};

use crate::fixture::StoreFixture;

/// Where the sessions a case creates are stored, and so which path of [`Migrating`] the suite
/// exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionsStart {
    /// In the new store, as after the switch: the pair must behave like the new store.
    New,
    /// In the old store, as before the switch: every case then reads, saves, touches, rotates
    /// and deletes sessions that still have to move.
    Old,
}

/// A fixture over two fixtures whose repositories are [`Migrating`] pairs (new, old).
///
/// With [`SessionsStart::Old`], `create` goes to the old store (the sessions that existed when
/// the migration began); every other operation goes through the pair. Raw writes go to both
/// stores (the case's session may have moved), so raw writes must work on both fixtures.
pub struct MigratingFixture {
    name: String,
    new: Box<dyn StoreFixture>,
    old: Box<dyn StoreFixture>,
    start: SessionsStart,
}

impl MigratingFixture {
    /// Sessions move from `old`'s store to `new`'s; the cases create them per `start`.
    pub fn new(
        new: Box<dyn StoreFixture>,
        old: Box<dyn StoreFixture>,
        start: SessionsStart,
    ) -> Self {
        let name = format!("{}<-{}", new.name(), old.name());
        MigratingFixture {
            name,
            new,
            old,
            start,
        }
    }
}

impl std::fmt::Debug for MigratingFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigratingFixture")
            .field("name", &self.name)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StoreFixture for MigratingFixture {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        let old = self.old.open(settings.clone()).await?;
        let pair = Migrating::new(self.new.open(settings).await?, Arc::clone(&old))?;
        Ok(match self.start {
            SessionsStart::New => Arc::new(pair),
            SessionsStart::Old => Arc::new(CreatedInOld { pair, old }),
        })
    }

    fn can_write_raw(&self) -> bool {
        self.new.can_write_raw() && self.old.can_write_raw()
    }

    /// Writes to both stores: a case may spoil a session after a save moved it.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.old.write_raw(key, bytes).await?;
        self.new.write_raw(key, bytes).await
    }

    fn raw_shapes(&self) -> Vec<RawShape> {
        let new = self.new.raw_shapes();
        self.old
            .raw_shapes()
            .into_iter()
            .filter(|shape| new.contains(shape))
            .collect()
    }

    async fn write_raw_shape(&self, key: &SessionKey, shape: RawShape) -> Result<()> {
        self.old.write_raw_shape(key, shape).await?;
        self.new.write_raw_shape(key, shape).await
    }
}

type Pair = Migrating<Arc<dyn SessionRepository>, Arc<dyn SessionRepository>>;

/// A pair whose `create` writes to the old store: sessions made before the migration began.
#[derive(Debug)]
struct CreatedInOld {
    pair: Pair,
    old: Arc<dyn SessionRepository>,
}

#[async_trait]
impl SessionRepository for CreatedInOld {
    fn settings(&self) -> &Arc<SessionSettings> {
        self.pair.settings()
    }

    fn capabilities(&self) -> session_core::Capabilities {
        self.pair.capabilities()
    }

    async fn create(&self, session: &mut Session) -> Result<()> {
        self.old.create(session).await
    }

    async fn find(&self, id: &SessionId) -> Result<Option<Session>> {
        self.pair.find(id).await
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        self.pair.save(session).await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.pair.touch(id).await
    }

    async fn delete_by_key(&self, key: &SessionKey) -> Result<()> {
        self.pair.delete_by_key(key).await
    }

    async fn change_id(&self, session: &mut Session) -> Result<()> {
        self.pair.change_id(session).await
    }

    async fn find_by_principal(&self, principal: &str) -> Result<Vec<SessionInfo>> {
        self.pair.find_by_principal(principal).await
    }

    async fn delete_by_principal(&self, principal: &str) -> Result<u64> {
        self.pair.delete_by_principal(principal).await
    }

    async fn import(&self, id: &SessionId, record: &SessionRecord) -> Result<bool> {
        self.pair.import(id, record).await
    }

    fn subscribe(&self) -> Result<EventSubscription> {
        self.pair.subscribe()
    }
}
