//! The whole conformance suite on the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use session_conformance::{conformance_suite, StoreFixture};
use session_core::testing::WriteRaw;
use session_core::{async_trait, Result, SessionKey, SessionRepository, SessionSettings};
use session_memory::{Config, MemoryStore};

/// A fresh store per case; every `open` is another handle (service instance) on it.
struct MemoryFixture(MemoryStore);

#[async_trait]
impl StoreFixture for MemoryFixture {
    fn name(&self) -> &str {
        "memory"
    }

    async fn open(&self, settings: SessionSettings) -> Result<Arc<dyn SessionRepository>> {
        Ok(Arc::new(self.0.with_settings(settings)))
    }

    fn can_write_raw(&self) -> bool {
        true
    }

    async fn write_raw(&self, key: &SessionKey, bytes: &[u8]) -> Result<()> {
        self.0.write_raw(key, bytes).await
    }
}

async fn fixture() -> Option<MemoryFixture> {
    let config = Config::default().with_sweep_interval(Duration::from_millis(100));
    Some(MemoryFixture(MemoryStore::open(
        config,
        SessionSettings::default(),
    )))
}

conformance_suite!(fixture);
