//! What a store provides to run the suite.

use std::sync::Arc;

use async_trait::async_trait;
use session_core::testing::RawShape;
use session_core::{Result, SessionKey, SessionRepository, SessionSettings};

/// One isolated namespace on a real store, from which the cases open repositories.
///
/// Each case gets a fresh fixture from the factory given to
/// [`conformance_suite!`](crate::conformance_suite), so cases never see each other's sessions
/// (use [`namespace`](crate::namespace) for a unique key prefix, table or database name).
#[async_trait]
pub trait StoreFixture: Send + Sync + 'static {
    /// The store's name in reports, e.g. `memory` or `redis-cluster`.
    fn name(&self) -> &str;

    /// A repository on this fixture's namespace with `settings`.
    ///
    /// Every call is another "service instance": repositories opened from one fixture share
    /// their data but not their in-process state.
    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>>;

    /// Whether [`StoreFixture::write_raw`] is implemented; the corrupt-data cases need it.
    fn can_write_raw(&self) -> bool {
        false
    }

    /// Replaces what the store holds for `key` by `bytes`, through the store's own client and
    /// without any encoding, so that the session cannot be decoded. Stores with a multi-field
    /// layout put the bytes where the session's metadata or record lives.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        let _ = (key, bytes);
        Err(session_core::Error::Unsupported("raw writes"))
    }

    /// The shapes of foreign stored data [`StoreFixture::write_raw_shape`] can leave, beyond
    /// the corrupt record of [`StoreFixture::write_raw`]: those a store's server can hold
    /// (e.g. another value type at a Redis key, invalid UTF-8 in a SQL text column).
    fn raw_shapes(&self) -> Vec<RawShape> {
        Vec::new()
    }

    /// Leaves data of `shape` where the store keeps the session of `key` (which exists), through
    /// the store's own client.
    async fn write_raw_shape(&self, key: &SessionKey, shape: RawShape) -> Result<()> {
        let _ = (key, shape);
        Err(session_core::Error::Unsupported("raw shapes"))
    }
}
