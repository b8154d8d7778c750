//! Raw baselines: the driver of each store moving the same bytes with no codec or contract work.

use std::sync::Arc;

use async_trait::async_trait;
use moka::future::Cache;
use session_core::{Result, SessionKey};

/// The cheapest way the store's own client can read and write a session's bytes.
#[async_trait]
pub trait RawDriver: Send + Sync {
    /// Reads the bytes stored under `key`.
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>>;
    /// Writes `bytes` under `key`.
    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()>;
}

/// A moka future cache of encoded bytes, built like the memory store's cache minus expiry and
/// weighing: the limit the memory store can approach.
pub struct MokaRaw(Cache<SessionKey, Arc<Vec<u8>>>);

impl MokaRaw {
    pub fn new() -> Self {
        MokaRaw(Cache::builder().max_capacity(1 << 20).build())
    }
}

#[async_trait]
impl RawDriver for MokaRaw {
    async fn get(&self, key: &SessionKey) -> Result<Option<Arc<Vec<u8>>>> {
        Ok(self.0.get(key).await)
    }

    async fn put(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<()> {
        self.0.insert(*key, Arc::new(bytes)).await;
        Ok(())
    }
}
