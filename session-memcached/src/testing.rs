//! Hooks for tests (feature `testing`): raw writes of what a foreign or broken writer could
//! leave where a session is kept.

use async_memcached::MetaProtocol;
use session_core::{async_trait, Operation, Result, SessionKey};

use crate::error::map;
use crate::store::MemcachedStore;

#[async_trait]
impl session_core::testing::WriteRaw for MemcachedStore {
    /// Replaces the item of `key` with `bytes`, as a foreign writer would; it expires in a
    /// minute.
    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.run(Operation::Save, async {
            let mut connection = self.server(key).connection().await?;
            connection
                .meta_set(self.item_key(key), bytes, false, None, Some(&["T60"]))
                .await
                .map_err(map)?;
            Ok(())
        })
        .await
    }
}
